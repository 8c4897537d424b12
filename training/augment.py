"""Training-time augmentation (evaluation and serving crops are qfm_core.crops)."""
from __future__ import annotations

import numpy as np

from qfm_core.crops import ensure_min_side


def random_crop(img: np.ndarray, size: int, rng: np.random.Generator, hflip: bool = True) -> np.ndarray:
    img = ensure_min_side(img, size)
    h, w = img.shape[:2]
    top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
    crop = img[top:top + size, left:left + size]
    if hflip and rng.random() < 0.5:  # a mirror image has the same quality
        crop = crop[:, ::-1]
    return crop
