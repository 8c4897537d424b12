"""The kernel's top-k selection, emulated lane by lane on the CPU (export/kernels/emulation.py),
against a stable argsort: the order the kernels, the launcher and the TensorRT engine promise
(k smallest, lower bank index first among equal distances, non-finite distances last)."""
import math

import numpy as np
import pytest

from export.kernels import emulation
from export.kernels.compile import TILES
from export.kernels.launch import split_bank
from export.kernels.launch import partial_geometry


def _expected(dist, k):
    key = emulation.rank_key(dist)
    idx = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(key, idx, 1), idx


def _distances(rng, n, m, kind):
    if kind == "ties":        # a handful of distinct values: most candidates tie with the k-th
        return rng.integers(0, rng.integers(1, 5), size=(n, m)).astype(np.float32)
    if kind == "all_equal":
        return np.full((n, m), 0.5, np.float32)
    d = rng.random((n, m), dtype=np.float32)
    if kind == "non_finite":  # NaN / inf rows and entries, as an FP16 overflow upstream gives
        d[rng.random((n, m)) < 0.2] = np.nan
        d[rng.random((n, m)) < 0.1] = np.inf
        d[0] = np.nan
    if kind == "descending":  # worst case for the list: every candidate displaces the tail
        d = np.sort(d, axis=1)[:, ::-1].copy()
    return d


def _check(dist, k, splits, chunk, mt):
    got_d, got_i = emulation.topk(dist, k, splits, chunk, mt)
    ref_d, ref_i = _expected(dist, k)
    np.testing.assert_array_equal(got_i, ref_i)
    np.testing.assert_array_equal(got_d, ref_d)
    assert (got_i >= 0).all() and (got_i < dist.shape[1]).all()


@pytest.mark.parametrize("seed", range(6))
def test_random_cases_match_stable_argsort(seed):
    """50 cases per seed (300 in all): k = 1..32, ties, NaN, empty slices, ragged chunks."""
    rng = np.random.default_rng(seed)
    kinds = ("ties", "all_equal", "uniform", "non_finite", "descending")
    for case in range(50):
        m = int(rng.integers(1, 700))
        k = int(rng.integers(1, min(32, m) + 1))
        n = int(rng.integers(1, 6))
        mt = TILES[int(rng.integers(1, len(TILES) + 1))][1]
        splits = int(rng.integers(1, math.ceil(m / mt) + 4))   # may exceed the tiles: empty slices
        chunk = math.ceil(m / splits)                            # the plugin's chunk: any size
        if rng.random() < 0.3:                                   # a slice shorter than k
            chunk = max(1, min(chunk, k - 1)) if k > 1 else chunk
            splits = math.ceil(m / chunk) + int(rng.integers(0, 3))
        _check(_distances(rng, n, m, kinds[case % len(kinds)]), k, splits, chunk, mt)


@pytest.mark.parametrize("k", [1, 2, 31, 32])
def test_ties_across_split_boundaries_rank_lower_index_first(k):
    m = 1000
    dist = np.ones((2, m), np.float32)
    dist[:, [5, 63, 64, 65, 127, 128, 500, 999] + list(range(700, 740))] = 0.25
    for splits in (1, 3, 7, 16):
        _check(dist, k, splits, math.ceil(m / splits), 64)


def test_schedules_of_the_launcher_and_the_plugin():
    """split_bank (chunks a whole number of tiles) and partial_geometry (chunk = ceil(M/S)) on the
    same data give the same answer."""
    rng = np.random.default_rng(7)
    m, n, k = 5003, 3, 32
    dist = _distances(rng, n, m, "ties")
    for tactic, (_, mt) in TILES.items():
        splits, chunk = split_bank(m, n, tactic, sm_count=4)
        assert splits * chunk >= m and chunk % mt == 0
        _check(dist, k, splits, chunk, mt)
        geo = partial_geometry(n, m, 384, k, splits, tactic)
        g_splits, chunk2 = geo["grid"][0], geo["scalars"][4]
        assert g_splits * chunk2 >= m > (g_splits - 1) * chunk2
        _check(dist, k, g_splits, chunk2, mt)


def test_non_finite_query_still_returns_real_bank_rows():
    dist = np.full((1, 40), np.nan, np.float32)
    d, i = emulation.topk(dist, 8, 3, 14, 64)
    assert i.tolist() == [list(range(8))] and (d == emulation.FLT_MAX).all()


def test_emulated_list_primitives():
    best_d, best_i = emulation.empty_lists(1)
    for val, idx in [(3.0, 10), (1.0, 11), (3.0, 12), (2.0, 13)]:
        emulation.warp_insert(best_d, best_i, np.float32([val]), np.int32([idx]), np.array([True]))
    assert best_i[0, :4].tolist() == [11, 13, 10, 12] and best_d[0, 4] == np.inf
    # an offer of a value equal to the k-th never displaces it
    emulation.warp_offer(best_d, best_i, np.full((1, 32), 3.0, np.float32), np.arange(32, dtype=np.int32)[None], 3)
    assert best_i[0, :3].tolist() == [11, 13, 10]
