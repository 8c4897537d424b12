"""Which serving preprocess gives the best SRCC per unit of compute?

    python benchmarks/crop_plan_bench.py --checkpoint models/qfm_iqm [--dataset synthetic]

Compares, on the same images and the same model: the n x n crop grid at native resolution
(n = 1, 2, 3) and the whole image resized to the crop size (one forward pass, aspect squashed).
Cost is crops per image (each crop is one student forward pass); wall time is measured in the
same run. Default data: the held-out synthetic photographs (the bundled model trained on every
LIVEC dev image, so LIVEC would flatter it). Prints a table and writes JSON beside --out.
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

from training.checkpoint import load_student
from training.data.registry import load_dataset
from training.metrics import iqa_metrics
from training.transforms import grid_crops, load_rgb, normalize


@torch.no_grad()
def score(model, images, plan: str, batch: int = 36) -> tuple[np.ndarray, int, float]:
    cfg = model.cfg
    preds, crops_total, t0 = [], 0, time.perf_counter()
    for img in images:
        if plan == "resize":
            crops = np.asarray(Image.fromarray(img).resize((cfg.input_size, cfg.input_size), Image.BILINEAR))[None]
        else:
            crops = grid_crops(img, cfg.input_size, int(plan.split("x")[0]))
        x = torch.from_numpy(normalize(crops, cfg.mean, cfg.std))
        preds.append(torch.cat([model(x[i:i + batch])[0] for i in range(0, len(x), batch)]).mean().item())
        crops_total += len(crops)
    return np.asarray(preds), crops_total, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=Path("models/qfm_iqm"))
    ap.add_argument("--dataset", default="synthetic")
    ap.add_argument("--split", default=None)
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    ap.add_argument("--out", type=Path, default=Path("build/crop_plan_bench.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = load_student(args.checkpoint)
    meta = load_dataset(args.dataset, split=args.split)
    if args.limit:
        meta = meta.subset(range(min(args.limit, len(meta))))
    images = [load_rgb(s.path) for s in meta.samples]
    target = np.asarray(meta.normalized_scores()) * 100
    rows = []
    for plan in ("resize", "1x1", "2x2", "3x3"):
        pred, crops, secs = score(model, images, plan)
        m = iqa_metrics(pred, target)
        rows.append({"plan": plan, "srcc": m["srcc"], "plcc": m["plcc"], "crops_per_image": crops / len(images),
                     "images_per_s": len(images) / secs})
    print(f"{len(images)} images of {args.dataset}; model {args.checkpoint}")
    print(f"{'plan':8s} {'SRCC':>7s} {'PLCC':>7s} {'crops/img':>10s} {'img/s':>7s}")
    for r in rows:
        print(f"{r['plan']:8s} {r['srcc']:7.4f} {r['plcc']:7.4f} {r['crops_per_image']:10.1f} {r['images_per_s']:7.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"dataset": args.dataset, "n": len(images), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
