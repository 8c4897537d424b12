"""Generate the synthetic benchmark into a git-ignored cache (deterministic by seed).

    python training/data/build_synthetic.py [--out data_cache/synthetic] [--seed 0]

An interrupted build resumes: photos finished in OUT.partial/ are kept (same settings only).

Reference photographs shipped in installed packages (synthetic/photos.py) x 15 distortion types
x 5 levels (synthetic/distortions.py), labelled 0..100 by an ensemble of full-reference metrics
(synthetic/labels.py). SYNTHETIC: the labels are derived from full-reference metrics, not human
opinions. Whole photographs are held out for the test split, so no test content (not even
another view of it) is seen in training.
"""
from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from training.cli import HelpFormatter
from training.data.registry import SYNTHETIC_ROOT
from training.data.synthetic.distortions import DISTORTIONS, N_LEVELS, apply
from training.data.synthetic.labels import (
    METRIC_MAPS,
    full_reference_metrics,
    metrics_to_label,
)
from training.data.synthetic.photos import PHOTOS, load_photo
from qfm_core.files import write_json

# Further "zoomed" views of photos large enough for them (no upsampling): more content variety
# from the same photographs, at the scales real photos are judged at.
ZOOM, ZOOM2 = 1.5, 2.0


def square_views(img: np.ndarray, size: int) -> list[tuple[str, np.ndarray]]:
    """Centre crops of `size` pixels after resizing the short side to size (and to ZOOM*size,
    ZOOM2*size when the photo has enough pixels for that without upsampling)."""
    views = []
    h, w = img.shape[:2]
    for view, short in (("full", size), ("zoom", round(ZOOM * size)), ("zoom2", round(ZOOM2 * size))):
        if view != "full" and min(h, w) < short:
            continue
        scale = short / min(h, w)
        rw, rh = max(size, round(w * scale)), max(size, round(h * scale))
        resized = np.asarray(Image.fromarray(img).resize((rw, rh), Image.LANCZOS))
        top, left = (rh - size) // 2, (rw - size) // 2
        views.append((view, np.ascontiguousarray(resized[top:top + size, left:left + size])))
    return views


def split_photos(seed: int, test_fraction: float) -> set[str]:
    """Names of the held-out photographs, drawn only among photos eligible for it (train-only
    additions do not move the draw)."""
    names = sorted(p.name for p in PHOTOS if p.holdout)
    n_test = max(1, round(test_fraction * len(names)))
    order = np.random.default_rng(seed).permutation(len(names))
    return {names[i] for i in order[:n_test]}


def build_photo(pi: int, size: int, seed: int, split: str, image_dir: Path) -> list[dict]:
    """All views of photo `pi`: its pristine copy and every distortion level, labelled. Depends
    only on (photo, size, seed), so workers and partial builds give identical files."""
    torch.set_num_threads(1)
    photo = PHOTOS[pi]
    dist_names = sorted(DISTORTIONS)
    rows = []
    for vi, (view, ref) in enumerate(square_views(load_photo(photo), size)):
        stem = f"{photo.name}_{view}"
        Image.fromarray(ref).save(image_dir / f"{stem}_ref.png")
        rows.append({"image": f"images/{stem}_ref.png", "mos": 100.0, "ref_id": photo.name, "split": split,
                     "distortion": "none", "level": 0})
        distorted, meta = [], []
        for di, name in enumerate(dist_names):
            for level in range(1, N_LEVELS + 1):
                rng = np.random.default_rng([seed, pi, vi, di, level])
                distorted.append(apply(name, ref, level, rng))
                meta.append((name, level))
        metrics = full_reference_metrics(distorted, ref)
        labels = metrics_to_label(metrics)
        for k, (img, (name, level)) in enumerate(zip(distorted, meta)):
            fname = f"images/{stem}_{name}_{level}.png"
            Image.fromarray(img).save(image_dir.parent / fname)
            rows.append({"image": fname, "mos": round(float(labels[k]), 4), "ref_id": photo.name, "split": split,
                         "distortion": name, "level": level, **{m: round(float(metrics[m][k]), 6) for m in METRIC_MAPS}})
    return rows


def _partial_folder(tmp: Path, key: dict) -> dict[int, list[dict]]:
    """Photos an interrupted build with the same settings already finished (their rows files are
    written after all of their images), so a restart does only the rest. A partial folder made
    with other settings (or an older layout) is deleted."""
    key_file = tmp / "build_key.json"
    if tmp.exists() and not (key_file.exists() and json.loads(key_file.read_text()) == key):
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True, exist_ok=True)
    (tmp / "rows").mkdir(exist_ok=True)
    key_file.write_text(json.dumps(key))
    return {int(f.stem): json.loads(f.read_text()) for f in (tmp / "rows").glob("*.json")}


def _record_photo(tmp: Path, pi: int, rows: list[dict]) -> list[dict]:
    path = tmp / "rows" / f"{pi}.json"
    write_json(path, rows, indent=None)
    return rows


def build(out: Path, size: int, seed: int, test_fraction: float, only_split: str | None = None,
          workers: int = 2) -> dict:
    tmp = out.with_name(out.name + ".partial")
    test_photos = split_photos(seed, test_fraction)
    splits = {pi: ("test" if p.name in test_photos else "train") for pi, p in enumerate(PHOTOS)}
    key = {"size": size, "seed": seed, "splits": {p.name: splits[pi] for pi, p in enumerate(PHOTOS)},
           "distortions": sorted(DISTORTIONS), "levels": N_LEVELS}
    done = _partial_folder(tmp, key)
    todo = [pi for pi in splits if only_split in (None, splits[pi]) and pi not in done]
    if done:
        print(f"resuming {tmp}: {len(done)} photo(s) already built, {len(todo)} to go")
    args = [(pi, size, seed, splits[pi], tmp / "images") for pi in todo]
    if workers <= 1:
        fresh = [_record_photo(tmp, a[0], build_photo(*a)) for a in tqdm(args, desc="photos", unit="photo")]
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            fresh = [_record_photo(tmp, a[0], r) for a, r in
                     zip(args, tqdm(pool.imap(_build_photo_star, args), total=len(args), desc="photos", unit="photo"))]
    built = {**done, **dict(zip(todo, fresh))}
    results = [built[pi] for pi in sorted(built) if only_split in (None, splits[pi])]
    rows = {"train": [], "test": []}
    for photo_rows in results:
        for r in photo_rows:
            rows[r["split"]].append(r)
    columns = ["image", "mos", "mos_std", "ref_id", "distortion", "level", *METRIC_MAPS]
    for split, split_rows in rows.items():
        if only_split in (None, split):
            with open(tmp / f"{split}.csv", "w", newline="") as f:
                w = csv.DictWriter(f, columns, extrasaction="ignore", restval="")
                w.writeheader()
                w.writerows(split_rows)
    with open(tmp / "SOURCES.md", "w") as f:
        f.write("# Synthetic benchmark: reference photographs\n\nSYNTHETIC: labels are derived from "
                "full-reference metrics (piq: MS-SSIM, VIF, FSIM, GMSD), not human opinions.\n\n"
                "| photo | split | source | licence |\n|---|---|---|---|\n")
        for pi, p in enumerate(PHOTOS):
            f.write(f"| {p.name} | {splits[pi]} | {p.source} | {p.licence} |\n")
    info = {"seed": seed, "size": size, "test_fraction": test_fraction, "test_photos": sorted(test_photos),
            "only_split": only_split, "distortions": sorted(DISTORTIONS), "levels": N_LEVELS,
            "counts": {k: len(v) for k, v in rows.items()},
            "label": "mean of affine-mapped FR metrics x 100", "metric_maps": METRIC_MAPS,
            "torch": torch.__version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (tmp / "build_info.json").write_text(json.dumps(info, indent=2))
    shutil.rmtree(tmp / "rows")
    (tmp / "build_key.json").unlink()
    # Swap in the finished set only now: an interrupted build never leaves a half-written cache.
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return info


def _build_photo_star(a):
    return build_photo(*a)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--out", type=Path, default=SYNTHETIC_ROOT, help="output folder (replaced when done)")
    ap.add_argument("--size", type=int, default=288, help="side of the square images in pixels")
    ap.add_argument("--seed", type=int, default=0, help="seed of the noise draws and the train/test photo split")
    ap.add_argument("--test-fraction", type=float, default=0.2, help="share of photographs held out")
    ap.add_argument("--only-split", choices=("train", "test"),
                    help="generate one split only (its files are identical to a full build's)")
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="processes, one photo each")
    args = ap.parse_args(argv)
    if args.size < 224:
        ap.error("--size must be at least 224 (the student's crop size)")
    info = build(args.out, args.size, args.seed, args.test_fraction, args.only_split, args.workers)
    print(json.dumps({"out": str(args.out), **{k: info[k] for k in ("counts", "test_photos")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
