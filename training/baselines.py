"""Classical NR baselines on the paper's protocol splits, for the results table.

    python training/baselines.py --dataset livec --repeats 3 --out runs/baselines/livec.json

- BRISQUE (Mittal et al. 2012): the 36 natural-scene-statistics features computed by piq
  (greyscale as MATLAB's rgb2gray, two scales), with an RBF support-vector regressor fitted on
  each split's 80 % (scikit-learn; C and gamma chosen by 5-fold cross-validation inside the 80 %).
  piq's own `brisque()` scores with SVR weights it downloads at run time, which we cannot; fitting
  the regressor on the training split is how NR-IQA papers report BRISQUE on LIVEC anyway.
- Frozen ImageNet EfficientNet-Lite0 features + ridge regression (the baseline the foundation
  issue quotes, 0.74 / 0.76 on 10 splits), recomputed on exactly our splits: global-average and
  standard-deviation pooled final features of the whole image resized to 500x500.

Each prints per-split metrics and the median, as training/protocol.py does.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from training.cli import HelpFormatter
from training.data.registry import load_dataset
from training.data.splits import protocol_split
from qfm_core.files import write_json
from training.metrics import iqa_metrics
from qfm_core.crops import load_rgb


@torch.no_grad()
def brisque_features(rgb: np.ndarray) -> np.ndarray:
    """piq's BRISQUE feature vector (36 values) of one uint8 RGB image."""
    from piq.brisque import _natural_scene_statistics
    from piq.functional import imresize, rgb2yiq

    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].double()
    x = torch.round(rgb2yiq(x)[:, :1])                 # luma on 0..255, as piq.brisque does
    feats = []
    for _ in range(2):                                  # two scales
        feats.append(_natural_scene_statistics(x, 7, 7 / 6))
        x = imresize(x, sizes=(x.size(2) // 2, x.size(3) // 2))
    return torch.cat(feats, dim=-1)[0].numpy()


@torch.no_grad()
def lite0_features(rgb: np.ndarray, model) -> np.ndarray:
    from PIL import Image
    img = np.asarray(Image.fromarray(rgb).resize((500, 500), Image.BICUBIC), np.float32) / 255.0
    x = torch.from_numpy((img - 0.5) / 0.5).permute(2, 0, 1)[None]
    f = model.forward_features(x)[0].flatten(1)         # (C, h*w)
    return torch.cat([f.mean(1), f.std(1)]).numpy()


def fit_svr(X, y):
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVR
    grid = {"svr__C": [1, 10, 100], "svr__gamma": ["scale", 0.01, 0.1]}
    return GridSearchCV(make_pipeline(StandardScaler(), SVR(kernel="rbf")), grid, cv=5, n_jobs=1).fit(X, y)


def fit_ridge(X, y):
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    return make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 4, 12))).fit(X, y)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--dataset", default="livec")
    ap.add_argument("--root", type=Path)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--methods", default="brisque,lite0_ridge")
    ap.add_argument("--out", type=Path, default=Path("runs/baselines/livec.json"))
    args = ap.parse_args(argv)
    meta = load_dataset(args.dataset, args.root)
    y = np.asarray(meta.normalized_scores(), np.float64) * 100.0
    methods = args.methods.split(",")
    feats: dict[str, list] = {m: [] for m in methods}
    backbone = None
    if "lite0_ridge" in methods:
        from training.models.registry import student_config
        from training.models.student import QFMStudent
        backbone = QFMStudent(student_config("qfm_lite0")).backbone.eval()
    for s in tqdm(meta.samples, desc="features", unit="img"):
        rgb = load_rgb(s.path)
        if "brisque" in methods:
            feats["brisque"].append(brisque_features(rgb))
        if "lite0_ridge" in methods:
            feats["lite0_ridge"].append(lite0_features(rgb, backbone))
    fitters = {"brisque": fit_svr, "lite0_ridge": fit_ridge}
    report = {"dataset": args.dataset, "n_images": len(meta), "methods": {}}
    for m in methods:
        X = np.asarray(feats[m], np.float64)
        runs = []
        for seed in range(args.first_seed, args.first_seed + args.repeats):
            tr, te = protocol_split(meta, seed)
            model = fitters[m](X[tr], y[tr])
            runs.append({"seed": seed, **iqa_metrics(model.predict(X[te]), y[te])})
        med = {k: float(np.median([r[k] for r in runs])) for k in ("srcc", "plcc", "plcc_logistic", "krcc", "rmse")}
        report["methods"][m] = {"runs": runs, "median": med}
        per_seed = ", ".join(f"{r['srcc']:.3f}" for r in runs)
        print(f"{m}: median SRCC {med['srcc']:.3f} PLCC {med['plcc']:.3f} (seeds {per_seed})")
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
