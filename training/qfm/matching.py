"""Semantic-noise matching: for each image, the memory entry of SIMILAR quality and the most
DIFFERENT semantic features.

The distance is computed in the GEMM form |a|^2 + |b|^2 - 2 a.b, the same operation as the CUDA
pairwise-distance kernel (export/kernels), and on a GPU that kernel computes it.
"""
from __future__ import annotations

import torch


def pairwise_sq_l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(N, D) x (M, D) -> (N, M) squared Euclidean distances, accumulated in float32."""
    a, b = a.float(), b.float()
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2.0 * (a @ b.T)
    return d.clamp_min_(0.0)  # rounding can make exact duplicates slightly negative


def pairwise_cosine(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(N, M) cosine distances 1 - cos(a_i, b_j)."""
    a = a.float() / a.float().norm(dim=1, keepdim=True).clamp_min(eps)
    b = b.float() / b.float().norm(dim=1, keepdim=True).clamp_min(eps)
    return 1.0 - a @ b.T


DISTANCES = {"sq_l2": pairwise_sq_l2, "cosine": pairwise_cosine}
# auto: our CUDA kernel on a GPU, PyTorch elsewhere (config key qfm.matching_backend)
BACKENDS = ("auto", "kernel", "torch")
_GPU_KERNELS: dict[int, object] = {}   # one launcher per device (its module lives in that device's context)


def pairwise_distances(a: torch.Tensor, b: torch.Tensor, metric: str, backend: str = "auto") -> torch.Tensor:
    """Our CUDA kernel (fp16 in, fp32 accumulate) when the tensors are on a GPU, else torch.
    backend: auto (kernel on a GPU, torch elsewhere), kernel, or torch."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "kernel" and not a.is_cuda:
        raise ValueError("backend 'kernel' needs CUDA tensors")
    if backend != "torch" and a.is_cuda:
        device = a.device.index if a.device.index is not None else torch.cuda.current_device()
        if device not in _GPU_KERNELS:
            from export.kernels.launch import PairwiseTopK
            _GPU_KERNELS[device] = PairwiseTopK(device)
        return _GPU_KERNELS[device].pairwise(a.detach(), b.detach(), metric)   # pads D to a multiple of 8 itself
    return DISTANCES[metric](a, b)


def semantic_noise_match(features: torch.Tensor, scores: torch.Tensor, bank_features: torch.Tensor,
                         bank_scores: torch.Tensor, tau: float, metric: str = "cosine", backend: str = "auto"
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Index into the bank of each row's perturbation, and whether it has one.

    Candidates are bank entries with |q_i - q_j| <= tau; among them the one with the largest
    semantic distance is chosen (ties: lowest index). Rows without a candidate get valid=False.
    """
    if len(bank_features) == 0:
        n = len(features)
        return torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.bool)
    dist = pairwise_distances(features, bank_features, metric, backend)
    similar = (scores.float().reshape(-1, 1) - bank_scores.float().reshape(1, -1)).abs() <= tau
    dist = torch.where(similar, dist, torch.full_like(dist, -torch.inf))
    best = dist.argmax(dim=1)
    return best, similar.any(dim=1)
