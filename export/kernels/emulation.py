"""CPU emulation of the top-k selection in pairwise_topk.cu, lane by lane, for CI.

No GPU ever runs in CI, so the part of the kernel that is easy to get subtly wrong (the warp-wide
sorted list: ballot, popc, shfl_up, the order pending lanes are taken in, empty slots, the merge
of per-split lists) is re-enacted here step for step and checked against a stable argsort
(tests/test_kernel_emulation.py). The distances themselves are an input: their arithmetic is the
GPU tests' business (tests/gpu, against reference.py).

Mapping to the .cu source:
  list state     one warp per query; lane j holds slot j (best_d, best_i), lane 0 = best
  warp_insert    before = __ballot_sync(best_d <= d); pos = __popc(before); lanes > pos take
                 their left neighbour (__shfl_up_sync by 1), lane pos takes the candidate
  warp_offer     kth = slot k-1; pending = __ballot_sync(d < kth), taken lowest lane first
                 (__ffs), each re-checked against the current slot k-1 before inserting
  partial        block x covers bank rows [x*chunk, min(M, (x+1)*chunk)) in tiles of MT rows,
                 32 columns per offer, columns past the slice offered as (+inf, index m)
  merge          lanes read candidates 32 at a time; index < 0 means an empty slot (+inf)
  rank_key       a non-finite distance ranks (and is reported) as FLT_MAX

Rows (one per query) are vectorised with numpy; within a row every step is the warp's.
"""
from __future__ import annotations

import numpy as np

WARP = 32
FLT_MAX = np.float32(np.finfo(np.float32).max)
INF = np.float32(np.inf)
_LANES = np.arange(WARP)


def rank_key(d: np.ndarray) -> np.ndarray:
    d = np.asarray(d, np.float32)
    return np.where(np.isfinite(d), d, FLT_MAX).astype(np.float32)


def empty_lists(rows: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((rows, WARP), INF, np.float32), np.full((rows, WARP), -1, np.int32)


def warp_insert(best_d, best_i, d, i, active) -> None:
    """Insert candidate (d[r], i[r]) into row r's list wherever active[r]; in place."""
    pos = (best_d <= d[:, None]).sum(1)                        # __popc(__ballot_sync(best_d <= d))
    up_d = np.concatenate([best_d[:, :1], best_d[:, :-1]], 1)  # __shfl_up_sync(.., 1): lane 0 keeps its own
    up_i = np.concatenate([best_i[:, :1], best_i[:, :-1]], 1)
    shift = active[:, None] & (_LANES[None, :] > pos[:, None])
    put = active[:, None] & (_LANES[None, :] == pos[:, None])
    best_d[:] = np.where(shift, up_d, np.where(put, d[:, None], best_d))
    best_i[:] = np.where(shift, up_i, np.where(put, i[:, None], best_i))


def warp_offer(best_d, best_i, d, i, k: int) -> None:
    """Offer 32 candidates per row (d, i: (rows, 32), lane order) to lists of length k."""
    pending = d < best_d[:, k - 1:k]                           # ballot against the k-th before any insert
    if not pending.any():
        return
    for src in range(WARP):                                    # __ffs: lowest pending lane first
        rows = pending[:, src]
        if rows.any():
            cd, ci = d[:, src], i[:, src]
            warp_insert(best_d, best_i, cd, ci, rows & (cd < best_d[:, k - 1]))


def topk_partial(dist: np.ndarray, k: int, splits: int, chunk: int, mt: int) -> tuple[np.ndarray, np.ndarray]:
    """qfm_topk_partial on a given (N, M) distance matrix: (N, splits*k) distances and indices."""
    dist = np.asarray(dist, np.float32)
    n, m = dist.shape
    out_d = np.empty((n, splits * k), np.float32)
    out_i = np.empty((n, splits * k), np.int32)
    for x in range(splits):                                     # blockIdx.x
        best_d, best_i = empty_lists(n)
        m_begin, m_end = x * chunk, min(m, x * chunk + chunk)
        for m0 in range(m_begin, m_end, mt):                    # bank tiles
            for c0 in range(0, mt, WARP):
                cols = m0 + c0 + _LANES
                valid = cols < m_end
                d = np.full((n, WARP), INF, np.float32)
                d[:, valid] = rank_key(dist[:, cols[valid]])
                warp_offer(best_d, best_i, d, np.broadcast_to(cols.astype(np.int32), (n, WARP)), k)
        out_d[:, x * k:(x + 1) * k] = best_d[:, :k]
        out_i[:, x * k:(x + 1) * k] = best_i[:, :k]
    return out_d, out_i


def topk_merge(cand_d: np.ndarray, cand_i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """qfm_topk_merge: (N, L) candidates -> (N, k)."""
    n, length = cand_d.shape
    best_d, best_i = empty_lists(n)
    for c0 in range(0, length, WARP):
        cols = c0 + _LANES
        valid = cols < length
        i = np.full((n, WARP), -1, np.int32)
        i[:, valid] = cand_i[:, cols[valid]]
        d = np.full((n, WARP), INF, np.float32)
        d[:, valid] = np.where(i[:, valid] < 0, INF, rank_key(cand_d[:, cols[valid]]))
        warp_offer(best_d, best_i, d, i, k)
    return best_d[:, :k], best_i[:, :k]


def topk(dist: np.ndarray, k: int, splits: int, chunk: int, mt: int) -> tuple[np.ndarray, np.ndarray]:
    """The launcher's and the engine's two-kernel path: partial lists, then the merge."""
    return topk_merge(*topk_partial(dist, k, splits, chunk, mt), k)
