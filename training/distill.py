r"""Teacher -> student distillation on the paper's protocol splits (issue #3).

    python training/distill.py --config training/configs/distill_livec.yaml --dataset livec \
        --repeats 3 --out runs/distill_livec
    python training/distill.py --config ... --dataset livec --all --out runs/NAME   # one model on all of it

For each seeded 80/20 split of --dataset:
  1. the teacher (a larger EfficientNet-Lite, ImageNet weights) is fine-tuned on the 80 %;
  2. it labels an unlabelled pool: distorted versions of real photographs (the synthetic
     benchmark's TRAIN photographs; their full-reference labels are ignored) -> pool.csv;
  3. the student trains on the 80 % (human MOS) plus the pool (teacher scores), the pool sampled
     `samples_per_epoch` per epoch; `pool.enabled: false` trains the same student without it.
`replay:` (optional) mixes a labelled set into the student's epochs as well
(distill_synthinit_replay.yaml replays the synthetic benchmark with its full-reference labels).
Teacher and student are evaluated on the 20 % that neither saw; the report gives every split and
the median for both. `--all` trains one teacher and student on the whole data set instead (a
model to package; its figure is the protocol run's). Score distillation only: feature
distillation is not implemented.
"""
from __future__ import annotations

import argparse
import json
import shlex
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import yaml

from training.checkpoint import load_student, student_plan
from training.cli import HelpFormatter
from training.config import config_from_dict
from training.data.meta import MetaInfo, Sample, ScoreScale, write_meta_csv
from training.data.readers import read_generic_csv
from training.data.registry import load_dataset
from training.data.splits import protocol_split
from qfm_core.files import write_json
from training.inference import predict_images
from training.trainer import fit
from qfm_core.crops import load_rgb

KEYS = ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")


def label_pool(teacher_dir: Path, pool: MetaInfo, grid: int, out_csv: Path) -> MetaInfo:
    """Teacher scores for every pool image, cached in out_csv. The cache is reused only when it is
    newer than the teacher's weights and covers the same images (a resumed run)."""
    weights = teacher_dir / "model.safetensors"
    if out_csv.exists() and out_csv.stat().st_mtime >= weights.stat().st_mtime:
        cached = read_generic_csv(out_csv, name="teacher_pool", scale=ScoreScale(0.0, 100.0))
        if [Path(s.path).resolve() for s in cached.samples] == [Path(s.path).resolve() for s in pool.samples]:
            print(f"reusing teacher labels {out_csv}")
            return cached
    teacher = load_student(teacher_dir)
    images = (load_rgb(s.path) for s in pool.samples)
    scores = predict_images(teacher, images, student_plan(teacher.cfg, grid), desc="teacher labels pool")
    labelled = MetaInfo("teacher_pool", [Sample(s.path, float(v), "", None) for s, v in zip(pool.samples, scores)],
                        ScoreScale(0.0, 100.0), "random")
    write_meta_csv(labelled, out_csv)
    return labelled


def distill_once(teacher_cfg: dict, student_cfg: dict, pool_cfg: dict, pool: MetaInfo, train_meta: MetaInfo,
                 test_meta: MetaInfo | None, run_dir: Path, replay: tuple[MetaInfo, int] | None = None) -> tuple[dict, dict]:
    """Teacher on train_meta -> teacher labels for the pool -> student on train_meta + pool
    (+ replay: a labelled set mixed in as is). Each stage resumes (or skips) a finished run folder."""
    t = fit(teacher_cfg, run_dir / "teacher", [(train_meta, None)], test_meta)
    sources = [(train_meta, None)]
    if pool_cfg.get("enabled", True):
        labelled = label_pool(run_dir / "teacher" / "checkpoint", pool, pool_cfg.get("grid", 1), run_dir / "pool.csv")
        sources.append((labelled, pool_cfg.get("samples_per_epoch")))
    if replay is not None:
        sources.append(replay)
    s = fit(student_cfg, run_dir / "student", sources, test_meta)
    return t, s


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--config", required=True, type=Path)
    ap.add_argument("--dataset", default="livec")
    ap.add_argument("--root", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--all", action="store_true",
                    help="no splits: teacher and student on ALL of --dataset, for packaging (OUT/all/student)")
    args = ap.parse_args(argv)
    spec = yaml.safe_load(args.config.read_text())
    teacher_cfg, student_cfg, pool_cfg = config_from_dict(spec["teacher"]), config_from_dict(spec["student"]), spec["pool"]
    teacher_cfg["student"], student_cfg["student"] = spec["teacher"]["student"], spec["student"]["student"]
    meta = load_dataset(args.dataset, args.root)
    pool_all = load_dataset(pool_cfg["dataset"], pool_cfg.get("root"), pool_cfg.get("split"))
    rng = np.random.default_rng(pool_cfg.get("seed", 0))
    pick = np.sort(rng.choice(len(pool_all), min(pool_cfg["size"], len(pool_all)), replace=False))
    pool = pool_all.subset(pick.tolist())
    # Optional replay of a labelled set into the student's mixture, e.g. the synthetic benchmark with
    # its own (full-reference) labels: the teacher, tuned on authentic photographs only, ranks
    # synthetic distortions poorly, and a student taught only by it forgets them.
    rc = spec.get("replay")
    replay = None if not rc else (load_dataset(rc["dataset"], rc.get("root"), rc.get("split")), rc["samples_per_epoch"])

    if args.all:
        # A model to ship: teacher and student on every labelled image; nothing of --dataset is left
        # to test on, so the recipe's figure is the protocol run's (package_model.py --protocol).
        distill_once(teacher_cfg, student_cfg, pool_cfg, pool, meta, None, args.out / "all", replay)
        shutil.copyfile(args.config, args.out / "all" / "student" / "config.yaml")
        (args.out / "all" / "student" / "command.txt").write_text(shlex.join([sys.executable, *sys.argv]) + "\n")
        print(f"student for packaging: {args.out / 'all' / 'student'}")
        return 0

    runs = []
    for seed in range(args.first_seed, args.first_seed + args.repeats):
        tr, te = protocol_split(meta, seed)
        test_meta = meta.subset(te)
        t, s = distill_once({**teacher_cfg, "seed": seed}, {**student_cfg, "seed": seed}, pool_cfg, pool,
                            meta.subset(tr), test_meta, args.out / f"seed_{seed}", replay)
        runs.append({"seed": seed, "teacher": {k: t["val"][k] for k in KEYS}, "student": {k: s["val"][k] for k in KEYS},
                     "n_test": len(test_meta), "pool": len(pool) if pool_cfg.get("enabled", True) else 0})
        print(json.dumps(runs[-1]))
    report = {"runs": runs, "config": str(args.config), "dataset": args.dataset,
              "median": {role: {k: statistics.median(r[role][k] for r in runs) for k in KEYS}
                         for role in ("teacher", "student")}}
    write_json(args.out / "distill.json", report)
    print(json.dumps(report["median"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
