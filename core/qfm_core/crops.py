"""Image decoding, evaluation crops and normalisation. Pure NumPy/Pillow so the serving model
(triton_repo/qfm_score) applies exactly the crops training's evaluation averages over; which
crops (size, grid, mean/std) is the crop plan (crop_plan.py)."""
from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps


def load_rgb(source: str | Path | BinaryIO) -> np.ndarray:
    """HxWx3 uint8 RGB with the EXIF orientation applied, from a path or a binary file object
    (the serving preprocess passes io.BytesIO of the request bytes)."""
    with Image.open(source) as im:
        im = ImageOps.exif_transpose(im)
        return np.asarray(im.convert("RGB"))


def ensure_min_side(img: np.ndarray, size: int) -> np.ndarray:
    """Upscale (bicubic) images whose short side is below the crop size; others are untouched,
    because the model judges quality at the native resolution."""
    h, w = img.shape[:2]
    if min(h, w) >= size:
        return img
    scale = size / min(h, w)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return np.asarray(Image.fromarray(img).resize(new, Image.BICUBIC))


def grid_positions(length: int, size: int, n: int) -> list[int]:
    """n evenly spaced crop offsets from edge to edge (one centred offset when n == 1)."""
    if n == 1:
        return [(length - size) // 2]
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


def grid_crops(img: np.ndarray, size: int, n_per_side: int) -> np.ndarray:
    """The evaluation crops: an n x n grid of size x size crops from corner to corner
    (duplicates removed when the image is exactly the crop size), as (K, size, size, 3)."""
    img = ensure_min_side(img, size)
    h, w = img.shape[:2]
    tops = sorted(set(grid_positions(h, size, n_per_side)))
    lefts = sorted(set(grid_positions(w, size, n_per_side)))
    return np.stack([img[t:t + size, l:l + size] for t in tops for l in lefts])


def channels_first(crops: np.ndarray) -> np.ndarray:
    """(K, H, W, 3) -> (K, 3, H, W), the student's layout, as a view (no copy): np.concatenate or
    np.ascontiguousarray materialises it. Raw uint8 pixels in this layout are the CPU serving
    student's input (it normalises in-graph); `normalize` gives the float input."""
    return crops.transpose(0, 3, 1, 2)


def normalize(crops: np.ndarray, mean, std) -> np.ndarray:
    """(K, H, W, 3) uint8 -> (K, 3, H, W) float32 with the student's mean/std."""
    x = channels_first(crops.astype(np.float32)) / 255.0
    return (x - np.asarray(mean, np.float32)[:, None, None]) / np.asarray(std, np.float32)[:, None, None]
