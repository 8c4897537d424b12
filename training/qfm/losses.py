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
