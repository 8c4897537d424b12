"""The crop plan: how an image becomes the student's input crops. It travels with the weights
(the `crop_plan` entry of a checkpoint's config.json, written when the checkpoint is saved) and
into the model repository, and evaluation, bank building, the repository writer and the served
model all read it from there: changing it means writing a new plan, not passing a flag to one
tool. Its fingerprint is part of a bank's identity.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qfm_core.crops import grid_crops, normalize

# How an image is brought to the crop size. The only rule so far: images whose short side is
# under the crop size are upscaled (bicubic) until it fits; larger ones are never resized, since
# the model judges quality at the native resolution (crops.ensure_min_side).
RESIZE_RULES = ("upscale_short_side_bicubic",)
DEFAULT_GRID = 3   # n x n crops from corner to corner, as the paper's multi-crop testing


class CropPlanError(ValueError):
    pass


@dataclass(frozen=True)
class CropPlan:
    size: int                  # crop side in pixels (the student's input size)
    grid: int                  # n: n x n crops per image
    mean: tuple                # per-channel normalisation of [0, 1] pixels
    std: tuple
    resize: str = RESIZE_RULES[0]

    def __post_init__(self):
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.size < 8 or self.grid < 1 or len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise CropPlanError(f"invalid crop plan {self.to_dict()}")
        if self.resize not in RESIZE_RULES:
            raise CropPlanError(f"unknown resize rule {self.resize!r} (known: {', '.join(RESIZE_RULES)})")

    @property
    def crops_per_image(self) -> int:
        """At most grid**2 (fewer when an image is exactly the crop size along a side)."""
        return self.grid * self.grid

    def crops(self, img: np.ndarray) -> np.ndarray:
        """(K, size, size, 3) uint8 crops of an HxWx3 uint8 image."""
        return grid_crops(img, self.size, self.grid)

    def normalize(self, crops: np.ndarray) -> np.ndarray:
        """(K, size, size, 3) uint8 -> (K, 3, size, size) float32 for the float student."""
        return normalize(crops, self.mean, self.std)

    def to_dict(self) -> dict:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> "CropPlan":
        unknown = set(d) - {"size", "grid", "mean", "std", "resize"}
        if unknown:
            raise CropPlanError(f"crop plan has unknown fields {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as e:
            raise CropPlanError(f"crop plan {d} is incomplete ({e})") from e

    def fingerprint(self) -> str:
        """Short hash of the plan, for identities and messages."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def describe(self) -> str:
        return f"{self.grid}x{self.grid} crops of {self.size} px, mean {list(self.mean)}, std {list(self.std)}, " \
               f"{self.resize} [{self.fingerprint()}]"


def read_plan(config_json: str | Path) -> CropPlan:
    """The crop plan recorded in a checkpoint's config.json (or a copy of it)."""
    path = Path(config_json)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: a student checkpoint folder holds config.json beside its weights")
    cfg = json.loads(path.read_text())
    if "crop_plan" not in cfg:
        raise CropPlanError(f"{path} has no crop_plan: re-save the checkpoint with training/package_model.py "
                            "(it writes the plan the weights were evaluated with)")
    plan = CropPlan.from_dict(cfg["crop_plan"])
    student = cfg.get("student", {})
    if student and (student.get("input_size") != plan.size or tuple(student.get("mean", ())) != plan.mean
                    or tuple(student.get("std", ())) != plan.std):
        raise CropPlanError(f"{path}: crop plan {plan.describe()} disagrees with the student's input "
                            f"(size {student.get('input_size')}, mean {student.get('mean')}, std {student.get('std')})")
    return plan
