"""Compare two student checkpoints on the same images: each one's metrics, and the difference of
SRCC / PLCC with a paired bootstrap interval. Prints JSON.

    python training/compare_models.py --a runs/candidate/package --b models/qfm_iqm --dataset synthetic

Why: a shipping decision between two models is often made on a difference of ~0.01 on a few
hundred items; the interval says whether such a difference is distinguishable from the choice of
items. Items are resampled independently: where many items share a source photograph (the
synthetic set: ~150 versions of each of 5 held-out photographs) the true uncertainty is larger
than the interval shows.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from training.checkpoint import load_student
from training.data.registry import load_dataset
from training.inference import predict_meta
from training.metrics import iqa_report, paired_difference


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", required=True, type=Path, help="checkpoint folder of model A (the candidate)")
    ap.add_argument("--b", required=True, type=Path, help="checkpoint folder of model B (the reference)")
    ap.add_argument("--dataset", required=True, help="registered name or a CSV path")
    ap.add_argument("--root", type=Path, help="data set root (default: its registered location)")
    ap.add_argument("--split", help="synthetic only: train, test or all (default test)")
    ap.add_argument("--grid", type=int, default=3, help="n for the n x n evaluation crops (default 3)")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = ap.parse_args(argv)
    if args.resamples < 100:
        ap.error("--resamples must be at least 100")
    try:
        models = {"a": load_student(args.a), "b": load_student(args.b)}
        meta = load_dataset(args.dataset, args.root, args.split)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    target = np.asarray(meta.normalized_scores()) * 100.0
    preds = {k: predict_meta(m, meta, grid=args.grid) for k, m in models.items()}
    refs = [s.ref_id for s in meta.samples]
    result = {"a": str(args.a), "b": str(args.b), "dataset": args.dataset, **meta.extra, "grid": args.grid}
    for k, p in preds.items():
        result[f"metrics_{k}"] = iqa_report(p, target, refs)
    result["difference_a_minus_b"] = {
        m: paired_difference(preds["a"], preds["b"], target, metric=m, n_resamples=args.resamples, seed=args.seed)
        for m in ("srcc", "plcc")}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
