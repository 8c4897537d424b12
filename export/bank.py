"""Reference banks: quality embeddings of images with known scores, for serving-time matching.

A bank is one safetensors file: `embeddings` (M, D) float32, `scores` (M,) float32 on 0..100,
`ids` (M,) int64; its metadata holds the image names (JSON), the data set, the student's
sha256 and the crop grid, so a server can refuse a bank built by another student.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from training.files import atomic_path


def save_bank(path: Path, embeddings: np.ndarray, scores: np.ndarray, names: list[str], info: dict) -> None:
    if not (len(embeddings) == len(scores) == len(names)):
        raise ValueError("embeddings, scores and names must have the same length")
    tensors = {"embeddings": np.ascontiguousarray(embeddings, np.float32),
               "scores": np.ascontiguousarray(scores, np.float32), "ids": np.arange(len(names), dtype=np.int64)}
    meta = {"names": json.dumps(names), **{k: str(v) for k, v in info.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def load_bank(path: Path) -> dict:
    """Tensors plus decoded metadata; raises a clear error on a missing or malformed file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"bank {path} not found: build it with `python export/build_bank.py`")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), "np") as f:
            meta = f.metadata() or {}
    except Exception as e:   # safetensors raises its own error type for truncated or foreign files
        raise ValueError(f"bank {path} is not a readable safetensors file ({e}); rebuild it with "
                         "`python export/build_bank.py`") from e
    missing = {"embeddings", "scores", "ids"} - set(tensors)
    if missing or "names" not in meta:
        raise ValueError(f"{path} is not a QFM bank (missing {sorted(missing) or ['names metadata']})")
    return {**tensors, "names": json.loads(meta["names"]), "meta": meta}
