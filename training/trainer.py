"""The training loop: QFM student on a mixture of sources, evaluated each epoch, resumable.

Run folder layout (pyiqa / timm style):
    config.yaml, command.txt     what was run
    checkpoint/                  model.safetensors + config.json after the latest epoch
    state/                       optimizer + trainer progress, for resume
    metrics.json, curve.png      history and final evaluation
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import ConcatDataset, DataLoader
from tqdm import tqdm

from training import distributed
from training.checkpoint import load_student, load_training_state, save_student, save_training_state
from training.config import DEFAULTS
from training.data.meta import MetaInfo
from training.datasets import ImageCache, MixtureSampler, RandomCropDataset, as_train_source, reference_codes
from training.inference import predict_images
from training.metrics import iqa_metrics
from training.models.registry import student_config
from training.models.student import QFMStudent
from training.qfm.losses import consistency_loss, label_residual, plcc_loss, regression_loss
from training.qfm.matching import semantic_noise_match
from training.qfm.memory import MemoryBank


def build_student(cfg: dict) -> QFMStudent:
    s = dict(cfg["student"])
    name = s.pop("name")
    if cfg.get("init_from"):
        model = load_student(cfg["init_from"])
        # Architecture comes from the checkpoint; only training-time switches may change.
        allowed = {"frozen_stages", "dropout"}
        if set(s) - allowed:
            raise ValueError(f"with init_from, student overrides are limited to {sorted(allowed)}")
        if s:
            fresh = QFMStudent(replace(model.cfg, **s, pretrained="none"))
            fresh.load_state_dict(model.state_dict())
            model = fresh
        return model
    return QFMStudent(student_config(name, **s))


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


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))
    return f


def plot_curves(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    ax[0].plot(ep, [h["train_loss"] for h in history], "o-", label="train loss")
    ax[0].set_xlabel("epoch"), ax[0].set_ylabel("loss"), ax[0].grid(alpha=0.3), ax[0].legend()
    ev = [h for h in history if "val" in h]
    if ev:
        for key in ("srcc", "plcc"):
            ax[1].plot([h["epoch"] for h in ev], [h["val"][key] for h in ev], "o-", label=f"val {key.upper()}")
        ax[1].set_ylim(min(0.0, *(h["val"]["srcc"] for h in ev)), 1.0)
    ax[1].set_xlabel("epoch"), ax[1].grid(alpha=0.3), ax[1].legend()
    fig.suptitle(path.parent.name)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def _group_ids(sources) -> list[np.ndarray | None]:
    """Per source, one group id per image (unique across sources), or None for absolute labels."""
    out, next_id = [], 0
    for s in sources:
        if s.labels == "absolute":
            out.append(None)
            continue
        codes = reference_codes(s.meta)
        out.append(codes + next_id)
        next_id += int(codes.max()) + 1
    return out


def run_identity(cfg: dict, sources, val_meta: MetaInfo | None) -> dict:
    """What a run folder was made with: the config (less train.epochs, which a resume may extend)
    and each data source's name, size and label kind. A changed recipe, or a data set rebuilt with
    another number of images, gives another identity (same-size content changes are not seen)."""
    cfg = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "epochs"}}
    return json.loads(json.dumps({
        "config": cfg,
        "train_sources": [{"name": s.meta.name, "n": len(s.meta), "samples_per_epoch": s.samples_per_epoch,
                           "labels": s.labels, "group_size": s.group_size} for s in sources],
        "val": None if val_meta is None else {"name": val_meta.name, "n": len(val_meta)}}, default=str))


def _without_new_defaults(new: dict, old: dict, defaults: dict) -> dict:
    """`new` config less the options `old` lacks that sit at their default: an option added to the
    code after a folder was made keeps the old behaviour at its default, so it is the same recipe."""
    out = {}
    for k, v in new.items():
        if k not in old:
            if k not in defaults or defaults[k] != v:
                out[k] = v
        elif isinstance(v, dict) and isinstance(old[k], dict) and isinstance(defaults.get(k), dict):
            out[k] = _without_new_defaults(v, old[k], defaults[k])
        else:
            out[k] = v
    return out


def _check_identity(out: Path, identity: dict) -> None:
    """Refuse to resume (or skip as finished) a run folder made with another recipe or data: a
    silent mix of two recipes is worse than an error. Folders made before this check have no
    identity file and are trusted; options added since, left at their defaults, are ignored."""
    path = out / "identity.json"
    if path.exists():
        old = json.loads(path.read_text())
        identity = {**identity, "config": _without_new_defaults(identity["config"], old.get("config", {}),
                                                                 json.loads(json.dumps(DEFAULTS)))}
        if old != identity:
            diff = sorted(k for k in identity if old.get(k) != identity[k])
            raise ValueError(f"{out} was made with a different {' and '.join(diff)} (see {path}); delete the "
                             "folder (or pass --fresh to train.py) to start this run over")
        return
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(identity, indent=2))
    os.replace(tmp, path)


def fit(cfg: dict, out_dir: str | Path, train_sources, val_meta: MetaInfo | None, resume: bool = True) -> dict:
    """`train_sources`: TrainSource entries (or (meta, samples_per_epoch) pairs, absolute labels)."""
    out = Path(out_dir)
    ctx = distributed.init()
    sources = [as_train_source(s) for s in train_sources]
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        if not (resume and (out / "state" / "trainer.json").exists()):
            (out / "identity.json").unlink(missing_ok=True)   # a fresh start: this run's identity
        _check_identity(out, run_identity(cfg, sources, val_meta))
    tc = cfg["train"]
    if tc["threads"]:
        torch.set_num_threads(tc["threads"])
    torch.manual_seed(cfg["seed"])
    model = build_student(cfg)
    mc = model.cfg
    caches = [ImageCache(s.meta, f"decode {s.meta.name} ({len(s.meta)})") for s in sources]
    groups = _group_ids(sources)
    crop_sets = [RandomCropDataset(c, mc.input_size, mc.mean, mc.std, cfg["seed"] + k, cfg["data"]["dither"], g)
                 for k, (c, g) in enumerate(zip(caches, groups))]
    grouped = [None if g is None else (g, s.group_size) for s, g in zip(sources, groups)]
    sampler = MixtureSampler([len(c) for c in caches], [s.samples_per_epoch for s in sources], cfg["seed"],
                             global_batch=tc["batch_size"], rank=ctx.rank, world=ctx.world, grouped=grouped)
    loader = DataLoader(ConcatDataset(crop_sets), batch_size=tc["batch_size"] // ctx.world, sampler=sampler,
                        drop_last=True, num_workers=0)
    val_cache = ImageCache(val_meta, f"decode val {val_meta.name} ({len(val_meta)})") \
        if val_meta is not None and ctx.main else None

    opt = torch.optim.AdamW(model.param_groups(tc["lr"], tc["backbone_lr_scale"], tc["weight_decay"]))
    total_steps = tc["epochs"] * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(tc["warmup_steps"], total_steps))
    memory = MemoryBank(cfg["qfm"]["memory_size"], mc.embed_dim) if cfg["qfm"]["enabled"] else None
    model = model.to(memory_format=torch.channels_last)
    step = TrainStep(model, memory, cfg, ctx)
    if ctx.enabled:   # averages gradients across processes during backward
        step = torch.nn.parallel.DistributedDataParallel(step)

    state = {"epoch": 0, "history": []}
    state_dir = out / "state"
    if resume and (state_dir / "trainer.json").exists():
        model.load_state_dict(load_student(out / "checkpoint").state_dict())
        state = load_training_state(opt, state_dir)
        # The optimizer's saved param_groups already hold the next step's learning rate.
        sched.last_epoch = state["epoch"] * len(loader)
        if memory is not None and (state_dir / "memory.safetensors").exists():
            memory.load_state_dict(load_file(str(state_dir / "memory.safetensors")))
        print(f"resuming {out} after epoch {state['epoch']}/{tc['epochs']}")

    for epoch in range(state["epoch"] + 1, tc["epochs"] + 1):
        t0 = time.time()
        torch.manual_seed(cfg["seed"] * 1000 + epoch)
        sampler.set_epoch(epoch)
        for d in crop_sets:
            d.epoch = epoch
        model.train()
        losses = []
        bar = tqdm(loader, desc=f"epoch {epoch}/{tc['epochs']}", unit="batch", leave=False, disable=not ctx.main)
        for x, y, group in bar:
            loss, logs = step(x.to(memory_format=torch.channels_last), y, group)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", **{k: f"{v:.3f}" for k, v in logs.items()})
        entry = {"epoch": epoch, "train_loss": float(np.mean(losses)), "seconds": round(time.time() - t0, 1),
                 "lr": sched.get_last_lr()[-1]}
        if val_cache is not None and (epoch % tc["eval_every"] == 0 or epoch == tc["epochs"]):
            pred = predict_images(model, val_cache.images, grid=cfg["data"]["eval_grid"], desc="val")
            entry["val"] = iqa_metrics(pred, val_cache.targets)
        state["history"].append(entry)
        state["epoch"] = epoch
        if ctx.main:
            tqdm.write(json.dumps({k: (v if k != "val" else {m: round(v[m], 4) for m in ("srcc", "plcc")})
                                   for k, v in entry.items()}))
            # Checkpoint the model first, then the state that says the epoch is done: a crash
            # between the two only repeats an epoch, it never skips one.
            save_student(model, out / "checkpoint", extra={"epoch": epoch, "seed": cfg["seed"],
                                                           "processes": ctx.world})
            save_training_state(opt, state, state_dir, None if memory is None else memory.state_dict())
            plot_curves(state["history"], out / "curve.png")
        ctx.barrier()   # nobody starts the next epoch before rank 0 has saved this one

    final = state["history"][-1] if state["history"] else {}
    metrics = {"final_epoch": state["epoch"], "val": final.get("val"), "history": state["history"],
               "val_dataset": None if val_meta is None else {"name": val_meta.name, "n": len(val_meta), **val_meta.extra}}
    if ctx.main:
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(metrics, indent=2))
        os.replace(tmp, out / "metrics.json")
    return metrics
