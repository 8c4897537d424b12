"""One QFM training step: the loss of a batch (clean regression, PLCC, dither, and with QFM on the
semantic-noise perturbed prediction and its consistency with the clean one), and the module that
wraps it for DistributedDataParallel. The loop around it is training/trainer.py."""
from __future__ import annotations

import torch

from training import distributed
from training.models.student import QFMStudent
from training.qfm.losses import (
    consistency_loss,
    label_residual,
    plcc_loss,
    regression_loss,
)
from training.qfm.matching import semantic_noise_match
from training.qfm.memory import MemoryBank


def _regression(score: torch.Tensor, y: torch.Tensor, group: torch.Tensor | None, kind: str,
                unit: float, keep: torch.Tensor | None = None) -> torch.Tensor:
    """Regression on the 0..1 scale (so its weight is comparable with the PLCC term's); items with
    within-reference labels are compared inside their group only (qfm.losses.label_residual; for
    absolute labels the residual is score - label, so the loss is the plain regression's)."""
    residual, usable = label_residual(score / unit, y / unit, group)
    usable = usable if keep is None else usable & keep
    if not usable.any():
        return score.new_zeros(())
    return regression_loss(residual[usable], torch.zeros_like(residual[usable]), kind)


def qfm_step(model: QFMStudent, x: torch.Tensor, y: torch.Tensor, memory: MemoryBank | None, cfg: dict,
             ctx: distributed.Context | None = None, group: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """One training step's loss: clean regression, and with QFM on, the semantic-noise
    perturbed prediction and its consistency with the clean one. `group`: per item, -1 for
    absolute labels, else the reference photograph whose versions it is compared with."""
    lc, qc = cfg["loss"], cfg["qfm"]
    tokens = model.backbone_tokens(x)
    score, _ = model.decode(tokens)
    unit = model.score_span
    loss = lc["w_clean"] * _regression(score, y, group, lc["regression"], unit)
    logs = {"reg": loss.item()}
    absolute = None if group is None else group < 0
    if lc["w_plcc"] > 0:
        # Correlation across images assumes one label scale: absolute-label items only.
        lp = plcc_loss(score, y) if absolute is None or absolute.all() else plcc_loss(score[absolute], y[absolute])
        loss = loss + lc["w_plcc"] * lp
        logs["plcc"] = lp.item()
    if lc["w_dither"] > 0:
        # The same crops with every pixel moved by -1/0/+1 grey level (kept inside 0..255): a change
        # nobody can see, so the score must not follow it (benchmarks/noise_sensitivity.py).
        std = torch.tensor(model.cfg.std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        mean = torch.tensor(model.cfg.mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        moved = x + torch.randint(-1, 2, x.shape, device=x.device).to(x.dtype) / (255.0 * std)
        moved = torch.maximum(torch.minimum(moved, (1 - mean) / std), -mean / std)
        d_score, _ = model.decode(model.backbone_tokens(moved))
        ldither = consistency_loss(score / unit, d_score / unit)
        loss = loss + lc["w_dither"] * ldither
        logs["dither"] = ldither.item()
    if memory is not None:
        semantic = tokens.mean(dim=1).detach()  # pre-gate features: what the gate must learn to filter
        # bank_items "absolute": within-reference items are neither matched nor stored (their labels
        # are not on the bank's scale); None = every item takes part.
        member = absolute if qc["bank_items"] == "absolute" else None
        # The memory lives on the CPU; matching and the gather run where the batch is.
        bank_f, bank_s = (t.to(semantic.device) for t in memory.contents())
        if memory.size >= qc["min_memory"]:
            idx, valid = semantic_noise_match(semantic, y, bank_f, bank_s, qc["tau"], qc["metric"],
                                              backend=qc["matching_backend"])
            valid = valid if member is None else valid & member
            if valid.any():
                noise = bank_f[idx].to(tokens) * valid.to(tokens).unsqueeze(1)
                p_score, _ = model.decode(tokens + qc["alpha"] * noise.unsqueeze(1))
                lpert = _regression(p_score, y, group, lc["regression"], unit, keep=valid)
                lcons = consistency_loss(score[valid] / unit, p_score[valid] / unit)
                loss = loss + lc["w_perturbed"] * lpert + lc["w_consistency"] * lcons
                logs.update(pert=lpert.item(), cons=lcons.item(), matched=valid.float().mean().item())
        if ctx is not None and ctx.enabled:   # one memory on every process: push everyone's batch
            semantic, y = ctx.all_gather(semantic), ctx.all_gather(y.to(semantic.dtype))
            member = None if member is None else ctx.all_gather(member.to(semantic.dtype)).bool()
        memory.push(semantic if member is None else semantic[member], y if member is None else y[member])
    return loss, logs


class TrainStep(torch.nn.Module):
    """The whole training step as one module, so DistributedDataParallel sees a single forward
    (the step calls the student twice: clean and perturbed)."""

    def __init__(self, model: QFMStudent, memory: MemoryBank | None, cfg: dict, ctx: distributed.Context):
        super().__init__()
        self.model, self.memory, self.cfg, self.ctx = model, memory, cfg, ctx

    def forward(self, x: torch.Tensor, y: torch.Tensor, group: torch.Tensor | None = None):
        return qfm_step(self.model, x, y, self.memory, self.cfg, self.ctx, group)
