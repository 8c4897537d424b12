"""Reference banks: quality embeddings of images with known scores, for serving-time matching.

A bank is one safetensors file: `embeddings` (M, D) float32, `scores` (M,) float32 on 0..100,
`ids` (M,) int64; its metadata holds the image names (JSON), the data set and the bank's
identity: the sha256 of the student's weights and the crop plan its embeddings were made with.
Embeddings of another student, or of the same student on other crops, live in another space:
the repository writer and the served match model refuse such a bank (check_identity).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from qfm_core.crop_plan import CropPlan
from qfm_core.files import atomic_path


class BankMismatch(ValueError):
    """The bank was made by another student or with another crop plan."""


def identity(student_sha256: str, plan: CropPlan) -> dict:
    """What a bank must agree with: written into its metadata, checked against the repository's."""
    return {"student_sha256": student_sha256, "crop_plan": json.dumps(plan.to_dict(), sort_keys=True)}


def _write(path: Path, embeddings: np.ndarray, scores: np.ndarray, names: list[str], meta: dict) -> None:
    if not (len(embeddings) == len(scores) == len(names)):
        raise ValueError("embeddings, scores and names must have the same length")
    tensors = {"embeddings": np.ascontiguousarray(embeddings, np.float32),
               "scores": np.ascontiguousarray(scores, np.float32), "ids": np.arange(len(names), dtype=np.int64)}
    meta = {"names": json.dumps(names), **{k: str(v) for k, v in meta.items()}}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def save_bank(path: Path, embeddings: np.ndarray, scores: np.ndarray, names: list[str], info: dict,
              student_sha256: str, plan: CropPlan) -> None:
    _write(path, embeddings, scores, names, {**info, **identity(student_sha256, plan)})


def save_synthetic_bank(path: Path, embeddings: np.ndarray, scores: np.ndarray) -> None:
    """Made-up rows for engine and kernel checks. Its identity says so (no student, no crop
    plan), so check_identity refuses it everywhere a real student is served."""
    _write(path, embeddings, scores, [f"synthetic{i}" for i in range(len(embeddings))],
           {"dataset": "synthetic", "student_sha256": "none (synthetic bank)"})


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
    return {**tensors, "names": json.loads(meta["names"]), "meta": meta, "path": str(path)}


def check_identity(bank: dict, student_sha256: str, plan: CropPlan, where: str) -> None:
    """Raise BankMismatch naming both identities unless `bank` (load_bank) was built by this
    student with this crop plan. `where` names what serves it (a repository, a model)."""
    meta = bank["meta"]
    theirs_sha = meta.get("student_sha256", "unrecorded")
    try:
        theirs_plan = CropPlan.from_dict(json.loads(meta["crop_plan"])).describe()
    except (KeyError, ValueError):
        theirs_plan = "unrecorded"
    ours_plan = plan.describe()
    if theirs_sha == student_sha256 and theirs_plan == ours_plan:
        return
    raise BankMismatch(f"bank {bank['path']} was built by student {theirs_sha[:16]} with crop plan {theirs_plan}, "
                       f"but {where} serves student {student_sha256[:16]} with crop plan {ours_plan}: rebuild the "
                       "bank with `python export/build_bank.py --checkpoint <that student>`")
