"""Evaluate a student checkpoint on a data set; prints metrics as JSON.

    python training/evaluate.py --checkpoint models/qfm_iqm --dataset synthetic
    python training/evaluate.py --checkpoint DIR --dataset ../shared/data/livec_dev/mos.csv

For `synthetic` the default split is `test` (held-out contents). Predictions are the mean over
the crops of the checkpoint's crop plan (config.json; 3x3 by default), as in the paper's multi-crop testing. Data sets with reference
ids also get `srcc_within_reference`: SRCC among each reference's distorted versions (median,
min over references), which per-photo label offsets cannot move.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

from training.checkpoint import load_plan, load_student_and_dataset
from training.cli import HelpFormatter
from training.inference import predict_meta
from training.metrics import iqa_report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path, help="folder with model.safetensors + config.json")
    ap.add_argument("--dataset", required=True, help="registered name (livec, synthetic, koniq10k, ...) or a CSV path")
    ap.add_argument("--root", type=Path, help="data set root; without it, the data set's registered location")
    ap.add_argument("--split", help="synthetic only: train, test or all (default test)")
    ap.add_argument("--predictions", type=Path, help="also write per-image predictions to this CSV")
    args = ap.parse_args(argv)
    try:
        model, meta = load_student_and_dataset(args.checkpoint, args.dataset, args.root, args.split)
        plan = load_plan(args.checkpoint)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pred = predict_meta(model, meta, plan)
    target = np.asarray(meta.normalized_scores()) * 100.0
    result = {"checkpoint": str(args.checkpoint), "dataset": args.dataset, **meta.extra,
              **iqa_report(pred, target, [s.ref_id for s in meta.samples]), "crop_plan": plan.to_dict()}
    if args.predictions:
        with open(args.predictions, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "mos", "target_0_100", "prediction"])
            for s, t, p in zip(meta.samples, target, pred):
                w.writerow([s.path, s.mos, f"{t:.4f}", f"{p:.4f}"])
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
