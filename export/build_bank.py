"""Build a reference bank from a labelled image set with a student checkpoint.

    python export/build_bank.py --checkpoint models/qfm_iqm --dataset livec --out build/bank.safetensors

Each entry is an image's quality embedding (mean over the same crop grid the server uses), its
known score on 0..100 (the data set's MOS, normalised) and its name. Served matches return these.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from qfm_core.bank import save_bank
from training.checkpoint import load_plan, load_student_and_dataset
from training.cli import HelpFormatter
from qfm_core.files import sha256_file
from training.inference import predict_meta


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path)
    ap.add_argument("--dataset", required=True, help="registered name or generic CSV (the references)")
    ap.add_argument("--root", type=Path)
    ap.add_argument("--split", help="synthetic only: train, test or all")
    ap.add_argument("--limit", type=int, help="use only the first N images (quick banks for tests)")
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args(argv)
    try:
        model, meta = load_student_and_dataset(args.checkpoint, args.dataset, args.root, args.split)
        plan = load_plan(args.checkpoint)
    except (FileNotFoundError, KeyError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.limit:
        meta = meta.subset(range(min(args.limit, len(meta))))
    # The same multi-crop path as evaluation; the embeddings are what the served ensemble averages.
    _, embeddings = predict_meta(model, meta, plan, embeddings=True)
    scores = np.asarray(meta.normalized_scores(), np.float32) * 100.0
    root = Path(meta.samples[0].path).parent
    names = [str(Path(s.path).relative_to(root)) if Path(s.path).is_relative_to(root) else Path(s.path).name
             for s in meta.samples]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_bank(args.out, embeddings, scores, names,
              {"dataset": args.dataset, "dim": embeddings.shape[1]},
              student_sha256=sha256_file(args.checkpoint / "model.safetensors"), plan=plan)
    print(json.dumps({"out": str(args.out), "entries": len(names), "dim": int(embeddings.shape[1])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
