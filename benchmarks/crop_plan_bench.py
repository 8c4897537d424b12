"""Which serving preprocess gives the best SRCC per unit of compute?

    python benchmarks/crop_plan_bench.py --checkpoint models/qfm_iqm [--dataset synthetic]

Compares, on the same images and the same model: the n x n crop grid at native resolution
(n = 1, 2, 3) and the whole image resized to 224, 384 or 512 pixels square (one forward pass of
the fully convolutional backbone; aspect squashed).
Cost is crops per image (each crop is one student forward pass); wall time is measured in the
same run. Default data: the held-out synthetic photographs (the bundled model trained on every
LIVEC dev image, so LIVEC would flatter it; for LIVEC use a protocol run's checkpoint with
--protocol-seed). Prints a table and writes JSON to --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from training.checkpoint import BUNDLED, load_student
from training.cli import HelpFormatter
from training.data.registry import load_dataset
from training.metrics import iqa_metrics
from qfm_core.crops import grid_crops, load_rgb, normalize


@torch.no_grad()
def score(model, images, plan: str, batch: int = 36) -> tuple[np.ndarray, int, float]:
    cfg = model.cfg
    preds, crops_total, t0 = [], 0, time.perf_counter()
    for img in images:
        if plan.startswith("resize"):
            side = int(plan[len("resize"):])  # whole image resized to side x side (multiple of 32)
            crops = np.asarray(Image.fromarray(img).resize((side, side), Image.BILINEAR))[None]
        else:
            crops = grid_crops(img, cfg.input_size, int(plan.split("x")[0]))
        x = torch.from_numpy(normalize(crops, cfg.mean, cfg.std))
        preds.append(torch.cat([model(x[i:i + batch])[0] for i in range(0, len(x), batch)]).mean().item())
        crops_total += len(crops)
    return np.asarray(preds), crops_total, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=BUNDLED)
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--split", default=None)
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    ap.add_argument("--protocol-seed", type=int, help="use the test part of this seeded 80/20 protocol split "
                    "(e.g. with the checkpoint of runs/livec_protocol/seed_N)")
    ap.add_argument("--out", type=Path, default=Path("build/crop_plan_bench.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_student(args.checkpoint)
    meta = load_dataset(args.dataset, split=args.split)
    if args.protocol_seed is not None:
        from training.data.splits import protocol_split

        meta = meta.subset(protocol_split(meta, args.protocol_seed)[1])
    if args.limit:
        meta = meta.subset(range(min(args.limit, len(meta))))
    images = [load_rgb(s.path) for s in meta.samples]
    target = np.asarray(meta.normalized_scores()) * 100
    rows = []
    for plan in ("resize224", "resize384", "resize512", "1x1", "2x2", "3x3"):
        pred, crops, secs = score(model, images, plan)
        m = iqa_metrics(pred, target)
        side = int(plan[len("resize"):]) if plan.startswith("resize") else model.cfg.input_size
        # Compute relative to one 224x224 forward pass (the cost scales with pixels).
        rel = crops / len(images) * (side / model.cfg.input_size) ** 2
        rows.append({"plan": plan, "srcc": m["srcc"], "plcc": m["plcc"], "crops_per_image": crops / len(images),
                     "relative_compute": rel, "images_per_s": len(images) / secs})
    print(f"{len(images)} images of {args.dataset}; model {args.checkpoint}")
    print(f"{'plan':10s} {'SRCC':>7s} {'PLCC':>7s} {'compute':>8s} {'img/s':>7s}   (compute: 224x224 passes per image)")
    for r in rows:
        print(f"{r['plan']:10s} {r['srcc']:7.4f} {r['plcc']:7.4f} {r['relative_compute']:8.1f} {r['images_per_s']:7.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dataset": args.dataset, "n": len(images), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
