"""Float64 reference for the kernels: what the GPU results are checked against.

The kernels take fp16 inputs, so the reference takes the same fp16 values and computes in float64;
the remaining differences are the kernels' fp32 accumulation. Ties rank the lower bank index first
(a stable sort), which is the order the kernels promise.
"""
from __future__ import annotations

import numpy as np

METRICS = ("sq_l2", "cosine")
EPS = 1e-8   # the kernels' floor on a norm (a zero row has cosine distance 1 to everything)


def distances(q: np.ndarray, b: np.ndarray, metric: str = "sq_l2") -> np.ndarray:
    """(N, D) x (M, D) -> (N, M) float64."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}")
    q, b = np.asarray(q, np.float64), np.asarray(b, np.float64)
    if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[1]:
        raise ValueError(f"expected (N, D) and (M, D), got {q.shape} and {b.shape}")
    dot = q @ b.T
    q_sq, b_sq = (q * q).sum(1), (b * b).sum(1)
    if metric == "sq_l2":
        return np.maximum(q_sq[:, None] + b_sq[None, :] - 2.0 * dot, 0.0)
    norms = np.maximum(np.sqrt(q_sq), EPS)[:, None] * np.maximum(np.sqrt(b_sq), EPS)[None, :]
    return 1.0 - dot / norms


def topk(q: np.ndarray, b: np.ndarray, k: int, metric: str = "sq_l2") -> tuple[np.ndarray, np.ndarray]:
    """The k smallest distances per query, ascending, lower index first among equals."""
    d = distances(q, b, metric)
    if not 1 <= k <= d.shape[1]:
        raise ValueError(f"k must be in 1..M={d.shape[1]}, got {k}")
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


def pad_dim(x: np.ndarray, multiple: int = 8) -> np.ndarray:
    """Zero-pad the feature axis to a multiple of 8 (the kernels' vector width); zeros change
    neither the dot products nor the norms."""
    extra = (-x.shape[1]) % multiple
    return x if extra == 0 else np.pad(x, ((0, 0), (0, extra)))
