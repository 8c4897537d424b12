"""Train a QFM-IQM student from a YAML config.

    python training/train.py --config training/configs/NAME.yaml --out runs/NAME

Resumes automatically from runs/NAME/state after an interruption (use --fresh to start over).
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
from pathlib import Path

from training import distributed
from training.cli import HelpFormatter
from training.config import load_config
from training.sources import load_sources, load_val
from training.trainer import fit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--config", required=True, type=Path, help="experiment YAML (training/configs/)")
    ap.add_argument("--out", required=True, type=Path, help="run folder (checkpoint/, metrics.json, curve.png)")
    ap.add_argument("--fresh", action="store_true", help="delete an existing run folder instead of resuming it")
    ap.add_argument("--epochs", type=int, help="override train.epochs (e.g. for a quick smoke run)")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.epochs is not None:
        cfg["train"]["epochs"] = args.epochs
    ctx = distributed.init()   # under torchrun: one process per GPU (or CPU worker), see distributed.py
    if ctx.main:
        if args.fresh and args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.config, args.out / "config.yaml")
        launcher = "torchrun x%d " % ctx.world if ctx.enabled else ""
        (args.out / "command.txt").write_text(launcher + shlex.join([sys.executable, *sys.argv]) + "\n")
    ctx.barrier()
    try:
        metrics = fit(cfg, args.out, load_sources(cfg["data"]["train"]), load_val(cfg["data"]["val"]))
    finally:
        distributed.shutdown(ctx)
    if ctx.main:
        print(json.dumps({"out": str(args.out), "epoch": metrics["final_epoch"], "val": metrics["val"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
