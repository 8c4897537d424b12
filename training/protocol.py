r"""The paper's protocol on one data set: seeded 80/20 splits, train on 80 %, test on 20 %, report
every run and the median.

    python training/protocol.py --config training/configs/livec_finetune.yaml --dataset livec \
        --repeats 3 --out runs/livec_protocol

The config's training sources that name --dataset are replaced by each split's 80 %; the 20 %
is the validation set and the reported test set (the final epoch is reported: no model selection
on test data).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.cli import HelpFormatter
from training.config import load_config
from training.data.registry import load_dataset
from training.data.splits import run_protocol
from qfm_core.files import write_json
from training.sources import load_sources, train_source
from training.trainer import fit


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--dataset", required=True, help="data set to split (name or CSV)")
    ap.add_argument("--root", type=Path, help="its root folder, if not the registered default")
    ap.add_argument("--repeats", type=int, default=3, help="number of seeded splits")
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path, help="one run folder per seed plus protocol.json")
    ap.add_argument("--epochs", type=int, help="override train.epochs")
    args = ap.parse_args(argv)
    cfg = load_config(args.config)
    if args.epochs is not None:
        cfg["train"]["epochs"] = args.epochs
    meta = load_dataset(args.dataset, args.root)
    others = [e for e in cfg["data"]["train"] if e["dataset"] != args.dataset]
    # The split data set keeps its entry's options (samples_per_epoch, labels); absent: all of it.
    entry = next((e for e in cfg["data"]["train"] if e["dataset"] == args.dataset), {"dataset": args.dataset})

    def train_and_test(train_meta, test_meta, seed):
        run_cfg = {**cfg, "seed": seed}
        sources = load_sources(others) + [train_source(entry, train_meta)]
        m = fit(run_cfg, args.out / f"seed_{seed}", sources, test_meta)
        return {k: m["val"][k] for k in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")} | {"n_test": len(test_meta)}

    seeds = list(range(args.first_seed, args.first_seed + args.repeats))
    result = run_protocol(meta, seeds, train_and_test)
    result.update(dataset=args.dataset, n_images=len(meta), config=str(args.config))
    write_json(args.out / "protocol.json", result)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
