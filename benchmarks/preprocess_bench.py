"""Decode + crop (+ normalise) throughput, images/s on one core, as the serving preprocess does it.

    python benchmarks/preprocess_bench.py [--images 40] [--grid 3]

decode_grid_crops is the CPU targets' qfm_score before the student (guarded decode, grid crops, uint8 NCHW; the
student normalises in-graph); decode_grid_crops_normalised adds the NumPy normalisation that the
GPU target (FP16 crops) still does in Python. Also Pillow's full decode vs JPEG draft mode
(DCT-domain downscale; only usable when the model input is smaller than the photo, so here it
shows the cost a resize-based plan would pay).
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from benchmarks.common import sample_images, write_json
from training.cli import HelpFormatter
from qfm_core.image_guard import Limits, decode_untrusted
from qfm_core.crops import channels_first, grid_crops, normalize

MEAN = STD = (0.5, 0.5, 0.5)
LIMITS = Limits()


def full_decode(blob: bytes, grid: int) -> np.ndarray:
    """The CPU serving preprocess (qfm_score/1/model.py with UINT8 crops, before the student)."""
    return np.ascontiguousarray(channels_first(grid_crops(decode_untrusted(blob, LIMITS), 224, grid)))


def full_decode_normalised(blob: bytes, grid: int) -> np.ndarray:
    """The GPU target's preprocess: float crops normalised in NumPy."""
    return normalize(grid_crops(decode_untrusted(blob, LIMITS), 224, grid), MEAN, STD)


def draft_resize(blob: bytes, grid: int) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as im:
        im.draft("RGB", (224, 224))  # JPEG only: decode at 1/2, 1/4 or 1/8 scale
        rgb = np.asarray(ImageOps.exif_transpose(im).convert("RGB").resize((224, 224), Image.BILINEAR))
    return normalize(rgb[None], MEAN, STD)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--grid", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("build/preprocess_bench.json"))
    args = ap.parse_args(argv)
    blobs = [p.read_bytes() for p in sample_images(args.images)]
    results = {}
    for name, fn in (("decode_grid_crops", full_decode), ("decode_grid_crops_normalised", full_decode_normalised),
                     ("jpeg_draft_resize", draft_resize)):
        best = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            for b in blobs:
                fn(b, args.grid)
            best = min(best, time.perf_counter() - t)
        results[name] = {"images_per_s_one_core": len(blobs) / best}
        print(f"{name:20s} {len(blobs) / best:7.1f} images/s on one core")
    write_json({"images": args.images, "grid": args.grid, "results": results}, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
