"""Loss terms of QFM training; every weight comes from the config's `loss` section."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def regression_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "smooth_l1") -> torch.Tensor:
    """On the 0..1 scale (the trainer divides by the score span)."""
    if kind == "l1":
        return F.l1_loss(pred, target)
    if kind == "mse":
        return F.mse_loss(pred, target)
    if kind == "smooth_l1":
        return F.smooth_l1_loss(pred, target, beta=0.02)
    raise ValueError(f"unknown regression loss {kind!r}")


def plcc_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """1 - Pearson correlation within the batch (scale-free; common in IQA training)."""
    if pred.numel() < 3:
        return pred.new_zeros(())
    p, t = pred - pred.mean(), target - target.mean()
    return 1.0 - (p * t).sum() / (p.norm() * t.norm() + eps)


def consistency_loss(clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """The perturbed prediction should not move away from the clean one."""
    return F.smooth_l1_loss(perturbed, clean.detach(), beta=0.02)


def label_residual(pred: torch.Tensor, target: torch.Tensor, group: torch.Tensor | None):
    """What the regression terms penalise, per item, and which items can be penalised.

    group < 0 (absolute labels): pred - target. group >= 0 (labels trusted only within one
    reference photograph, see training/datasets.TrainSource): pred and target are first centred on
    the mean of the items in the batch with the same group id, so a constant offset per photograph
    costs nothing and only the differences between its versions are learnt. A grouped item alone
    in the batch has nothing to be compared with and is left out (mask False)."""
    if group is None or not bool((group >= 0).any()):
        return pred - target, torch.ones_like(pred, dtype=torch.bool)
    grouped = group >= 0
    _, inv, counts = torch.unique(group, return_inverse=True, return_counts=True)
    n = counts[inv].to(pred.dtype)
    mean_p = pred.new_zeros(len(counts)).index_add(0, inv, pred)[inv] / n
    mean_t = target.new_zeros(len(counts)).index_add(0, inv, target)[inv] / n
    residual = torch.where(grouped, (pred - mean_p) - (target - mean_t), pred - target)
    return residual, ~grouped | (counts[inv] > 1)
