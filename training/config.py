"""Experiment configs: one YAML per experiment, merged over these defaults and validated."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from qfm_core.crop_plan import DEFAULT_GRID

DEFAULTS = {
    "seed": 0,
    "student": {"name": "qfm_lite0"},  # plus any StudentConfig field as an override
    "init_from": None,  # a checkpoint dir to fine-tune from (e.g. the synthetic pretraining run)
    "data": {
        # each: {dataset: NAME_OR_CSV, split: train|test|all (synthetic only), root: ..., samples_per_epoch: N}
        "train": [{"dataset": "synthetic", "split": "train"}],
        "val": {"dataset": "synthetic", "split": "test"},
        "eval_grid": DEFAULT_GRID,  # n x n evaluation crops per image, written into the checkpoint's crop plan
        "dither": 0,  # max grey levels of label-keeping random dither on half the training crops
    },
    "train": {"epochs": 10, "batch_size": 32, "lr": 3e-4, "backbone_lr_scale": 0.3, "weight_decay": 0.01,
              "warmup_steps": 30, "eval_every": 1, "threads": 0},
    "qfm": {"enabled": True, "memory_size": 1024, "tau": 3.0, "alpha": 1.0, "metric": "cosine",
            "min_memory": 64,
            # which items enter the memory bank and are matched against it: "all", or "absolute"
            # (items of within_reference sources neither: their labels are on another scale, so
            # "similar quality" to a bank entry means nothing for them)
            "bank_items": "all",
            # semantic distances: "auto" (our CUDA kernel on a GPU, PyTorch elsewhere), "kernel", "torch"
            "matching_backend": "auto"},
    "loss": {"regression": "smooth_l1", "w_clean": 1.0, "w_perturbed": 0.5, "w_consistency": 0.5, "w_plcc": 0.3,
             # score of a +-1 grey-level dithered copy of each crop pulled to the clean score
             # (one more forward/backward pass per step)
             "w_dither": 0.0},
}


def _merge(base: dict, over: dict, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if k not in base:
            raise KeyError(f"unknown config key {path}{k!r}; known: {sorted(base)}")
        out[k] = _merge(base[k], v, f"{path}{k}.") if isinstance(base[k], dict) and isinstance(v, dict) \
            and k != "student" else v
    return out


def load_config(path: str | Path) -> dict:
    return config_from_dict(yaml.safe_load(Path(path).read_text()) or {})


def config_from_dict(raw: dict) -> dict:
    """A config dict (a YAML's contents, or a section of a distillation spec) merged over the
    defaults and validated."""
    cfg = _merge(DEFAULTS, raw)
    if isinstance(raw.get("student"), dict):
        cfg["student"] = raw["student"]
    if "name" not in cfg["student"]:
        raise KeyError("config student section needs a `name` (see training/models/registry.py)")
    if cfg["qfm"]["bank_items"] not in ("all", "absolute"):
        raise ValueError(f"qfm.bank_items must be 'all' or 'absolute', got {cfg['qfm']['bank_items']!r}")
    from training.qfm.matching import BACKENDS   # torch is imported only where a config is validated
    if cfg["qfm"]["matching_backend"] not in BACKENDS:
        raise ValueError(f"qfm.matching_backend must be one of {BACKENDS}, got {cfg['qfm']['matching_backend']!r}")
    return cfg
