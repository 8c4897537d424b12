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

from training.checkpoint import load_plan, load_student
from training.cli import HelpFormatter
from training.data.registry import load_dataset
from qfm_core.files import atomic_path
from training.inference import predict_meta
from training.metrics import iqa_report, paired_difference


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--a", required=True, type=Path, help="checkpoint folder of model A (the candidate)")
    ap.add_argument("--b", required=True, type=Path, help="checkpoint folder of model B (the reference)")
    ap.add_argument("--dataset", required=True, help="registered name or a CSV path")
    ap.add_argument("--root", type=Path, help="data set root; without it, the data set's registered location")
    ap.add_argument("--split", help="synthetic only: train, test or all (default test)")
    ap.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ap.add_argument("--plot", type=Path, help="also draw both models' predictions against the labels to this PNG")
    args = ap.parse_args(argv)
    if args.resamples < 100:
        ap.error("--resamples must be at least 100")
    try:
        models = {"a": load_student(args.a), "b": load_student(args.b)}
        plans = {"a": load_plan(args.a), "b": load_plan(args.b)}
        meta = load_dataset(args.dataset, args.root, args.split)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    target = np.asarray(meta.normalized_scores()) * 100.0
    preds = {k: predict_meta(m, meta, plans[k]) for k, m in models.items()}
    refs = [s.ref_id for s in meta.samples]
    result = {"a": str(args.a), "b": str(args.b), "dataset": args.dataset, **meta.extra, "crop_plans": {k: p.to_dict() for k, p in plans.items()}}
    for k, p in preds.items():
        result[f"metrics_{k}"] = iqa_report(p, target, refs)
    result["difference_a_minus_b"] = {
        m: paired_difference(preds["a"], preds["b"], target, metric=m, n_resamples=args.resamples, seed=args.seed)
        for m in ("srcc", "plcc")}
    if args.plot:
        plot_predictions(preds, target, result, args.plot)
    print(json.dumps(result, indent=2))
    return 0


def plot_predictions(preds: dict, target: np.ndarray, result: dict, path: Path) -> None:
    """One panel per model, predictions against labels on shared axes: where the two disagree
    (a cluster shifted, a range compressed) shows at a glance."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True)
    for ax, k in zip(axes, ("a", "b")):
        m = result[f"metrics_{k}"]
        ax.scatter(target, preds[k], s=6, alpha=0.5)
        ax.set_title(f"{k.upper()}: {'/'.join(Path(result[k]).parts[-2:])}\nSRCC {m['srcc']:.3f}  PLCC {m['plcc']:.3f}", fontsize=9)
        ax.set_xlabel("label (0-100)"), ax.grid(alpha=0.3)
    axes[0].set_ylabel("prediction")
    d = result["difference_a_minus_b"]["srcc"]
    fig.suptitle(f"{result['dataset']}: SRCC A - B = {d['difference']:+.4f}, "
                 f"{d['confidence']:.0%} interval [{d['interval'][0]:+.3f}, {d['interval'][1]:+.3f}]", fontsize=10)
    fig.tight_layout()
    with atomic_path(path, keep_suffix=True) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
