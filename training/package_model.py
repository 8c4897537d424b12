r"""Package a training run as the bundled model: FP16 weights, config, and metrics measured now.

    python training/package_model.py --run runs/bundled --out models/qfm_iqm \
        [--protocol runs/livec_protocol/protocol.json]

metrics.json holds (a) the packaged FP16 model evaluated on the held-out synthetic photographs
(at --grid and with one centre crop), computed by this command, and (b) when given, the LIVEC
protocol result of the same recipe (separate runs on 80/20 splits, copied with its provenance). The bundled model itself trained on
all LIVEC dev images and is never evaluated on them.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from qfm_core.crop_plan import DEFAULT_GRID
from training.checkpoint import load_plan, load_student, save_student
from training.cli import HelpFormatter
from training.data.registry import load_dataset
from training.inference import predict_meta
from training.metrics import iqa_report


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _git_provenance() -> dict:
    """The commit, and whether tracked files differed from it: a package made from uncommitted
    configs or code must not claim to be that commit's output."""
    changed = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": _git("rev-parse", "HEAD") or "unknown",
            "git_dirty": None if changed is None else bool(changed)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--run", required=True, type=Path, help="training run folder (with checkpoint/)")
    ap.add_argument("--out", required=True, type=Path, help="package folder, e.g. models/qfm_iqm")
    ap.add_argument("--protocol", type=Path, help="protocol.json (training/protocol.py) or distill.json "
                    "(training/distill.py) of the same recipe on the LIVEC 80/20 splits")
    ap.add_argument("--grid", type=int, default=DEFAULT_GRID, help="n x n evaluation crops: written into the package's "
                    "crop plan, which evaluation, banks and the server then read")
    args = ap.parse_args(argv)
    model = load_student(args.run / "checkpoint")
    tmp = args.out.with_name(args.out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    save_student(model, tmp, dtype=torch.float16, extra={"source_run": str(args.run)}, grid=args.grid)
    packaged = load_student(tmp)  # evaluate exactly what ships (FP16-rounded weights)
    meta = load_dataset("synthetic", split="test")
    target, refs = np.asarray(meta.normalized_scores()) * 100, [s.ref_id for s in meta.samples]
    synthetic = {}
    # The shipped grid, and one centre crop: the figure `make test` recomputes in 1/9 of the time.
    for grid in dict.fromkeys((args.grid, 1)):
        pred = predict_meta(packaged, meta, dataclasses.replace(load_plan(tmp), grid=grid))
        synthetic[grid] = {**iqa_report(pred, target, refs), "grid": grid, "note": "SYNTHETIC held-out "
                           "photographs; labels from full-reference metrics, not human opinions"}
    metrics = {
        "synthetic_test": synthetic[args.grid],
        "synthetic_test_grid1": synthetic[1],
        "livec_protocol": None,
        "provenance": {"run": str(args.run), **_git_provenance(), "date": time.strftime("%Y-%m-%d"),
                       "machine": f"{platform.machine()} {os.cpu_count()} cores, CPU only", "torch": torch.__version__},
    }
    if args.protocol:
        proto = json.loads(args.protocol.read_text())
        # protocol.py reports one model per split; distill.py a teacher and a student: ship the student's.
        median, runs = proto["median"], proto["runs"]
        if "student" in median:
            median, runs = median["student"], [{"seed": r["seed"], **r["student"]} for r in runs]
        metrics["livec_protocol"] = {"median": median, "runs": runs, "config": proto["config"],
                                     "note": "same recipe trained on 80% splits, tested on the other 20%"}
    shutil.copyfile(args.run / "config.yaml", tmp / "train_config.yaml")
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
    if args.out.exists():
        shutil.rmtree(args.out)
    tmp.rename(args.out)
    print(json.dumps(metrics["synthetic_test"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
