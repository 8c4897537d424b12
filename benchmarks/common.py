"""Shared helpers of the benchmark scripts: the crops every benchmark uses, timing, JSON out."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LIVEC_IMAGES = REPO.parent / "shared" / "data" / "livec_dev" / "images"


def sample_images(n: int) -> list[Path]:
    """The first n LIVEC dev photographs (real JPEG/PNG files of ~500x500)."""
    files = sorted(LIVEC_IMAGES.glob("*"))[:n]
    if len(files) < n:
        raise FileNotFoundError(f"need {n} images under {LIVEC_IMAGES}, found {len(files)}")
    return files


def crops_batch(model_cfg: dict, n_images: int = 4, grid: int = 2, dtype=np.float32) -> np.ndarray:
    """Evaluation crops of real photographs (K, 3, S, S): normalised floats, or with dtype uint8
    the raw pixels the CPU serving student takes (it normalises in-graph)."""
    from training.transforms import channels_first, grid_crops, load_rgb, normalize

    crops = np.concatenate([grid_crops(load_rgb(p), model_cfg["input_size"], grid) for p in sample_images(n_images)])
    if np.dtype(dtype) == np.uint8:
        return np.ascontiguousarray(channels_first(crops))
    return normalize(crops, model_cfg["mean"], model_cfg["std"]).astype(dtype)


def timed(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def write_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), **obj}
    path.write_text(json.dumps(obj, indent=2))
