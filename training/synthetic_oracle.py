"""Ceiling of a content-blind model on the synthetic benchmark's held-out photographs.

    python training/synthetic_oracle.py [--root data_cache/synthetic]

Predicts each held-out image by the mean training label of its (distortion, level): what a model
would score if it recognised the distortion type and level perfectly but knew nothing about the
photograph. Full-reference labels also depend on content (the same blur costs a textured photo
more than a smooth one), so this is roughly the best a no-reference model can do without reading
content the way the full-reference metrics do. Prints metrics as JSON, like evaluate.py.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from training.cli import HelpFormatter
from training.data.registry import SYNTHETIC_ROOT
from training.metrics import iqa_report


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `python training/data/build_synthetic.py` first")
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def distortion_level_oracle(train: list[dict], test: list[dict]) -> np.ndarray:
    """Mean training label per (distortion, level), looked up for every test row."""
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in train:
        sums[(r["distortion"], r["level"])].append(float(r["mos"]))
    missing = {(r["distortion"], r["level"]) for r in test} - set(sums)
    if missing:
        raise ValueError(f"test (distortion, level) pairs absent from training: {sorted(missing)}")
    means = {k: float(np.mean(v)) for k, v in sums.items()}
    return np.array([means[(r["distortion"], r["level"])] for r in test])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--root", type=Path, default=SYNTHETIC_ROOT, help="synthetic benchmark folder")
    args = ap.parse_args(argv)
    try:
        train, test = read_rows(args.root / "train.csv"), read_rows(args.root / "test.csv")
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pred = distortion_level_oracle(train, test)
    target = np.array([float(r["mos"]) for r in test])
    out = iqa_report(pred, target, [r["ref_id"] for r in test])
    out["note"] = "content-blind oracle: mean training label of each image's (distortion, level); SYNTHETIC labels"
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
