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
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch.utils.data import ConcatDataset, DataLoader
from tqdm import tqdm

from training import distributed
from training.checkpoint import (
    load_student,
    load_training_state,
    save_student,
    student_plan,
    save_training_state,
)
from training.data.meta import MetaInfo
from training.datasets import (
    ImageCache,
    MixtureSampler,
    RandomCropDataset,
    as_train_source,
    reference_codes,
)
from qfm_core.files import atomic_path, write_json
from training.inference import predict_images
from training.metrics import iqa_metrics
from training.models.registry import student_config
from training.models.student import QFMStudent
from training.qfm.memory import MemoryBank
from training.qfm.step import TrainStep
from training.run_folder import check_identity, run_identity


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
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


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


def fit(cfg: dict, out_dir: str | Path, train_sources, val_meta: MetaInfo | None, resume: bool = True) -> dict:
    """`train_sources`: TrainSource entries (or (meta, samples_per_epoch) pairs, absolute labels)."""
    out = Path(out_dir)
    ctx = distributed.init()
    sources = [as_train_source(s) for s in train_sources]
    if ctx.main:
        out.mkdir(parents=True, exist_ok=True)
        if not (resume and (out / "state" / "trainer.json").exists()):
            (out / "identity.json").unlink(missing_ok=True)   # a fresh start: this run's identity
        check_identity(out, run_identity(cfg, sources, val_meta))
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
            pred = predict_images(model, val_cache.images, student_plan(model.cfg, cfg["data"]["eval_grid"]), desc="val")
            entry["val"] = iqa_metrics(pred, val_cache.targets)
        state["history"].append(entry)
        state["epoch"] = epoch
        if ctx.main:
            tqdm.write(json.dumps({k: (v if k != "val" else {m: round(v[m], 4) for m in ("srcc", "plcc")})
                                   for k, v in entry.items()}))
            # Checkpoint the model first, then the state that says the epoch is done: a crash
            # between the two only repeats an epoch, it never skips one.
            save_student(model, out / "checkpoint", grid=cfg["data"]["eval_grid"],
                         extra={"epoch": epoch, "seed": cfg["seed"], "processes": ctx.world})
            save_training_state(opt, state, state_dir, None if memory is None else memory.state_dict())
            plot_curves(state["history"], out / "curve.png")
        ctx.barrier()   # nobody starts the next epoch before rank 0 has saved this one

    final = state["history"][-1] if state["history"] else {}
    metrics = {"final_epoch": state["epoch"], "val": final.get("val"), "history": state["history"],
               "val_dataset": None if val_meta is None else {"name": val_meta.name, "n": len(val_meta), **val_meta.extra}}
    if ctx.main:
        write_json(out / "metrics.json", metrics)
    return metrics
