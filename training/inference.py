"""Multi-crop prediction, as the paper evaluates: the mean score over a grid of crops."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from training.data.meta import MetaInfo
from training.models.student import QFMStudent
from qfm_core.crop_plan import CropPlan
from qfm_core.crops import load_rgb


@torch.no_grad()
def predict_images(model: QFMStudent, images, plan: CropPlan, batch_size: int = 32, desc: str = "predict",
                   progress: bool = True, embeddings: bool = False):
    """Scores (0..100) of an iterable of HxWx3 uint8 images, each the mean over its crops (plan).
    With `embeddings=True`, also each image's mean quality embedding (N, D), as the served
    ensemble's aggregate step computes it. Crops of several images share forward passes."""
    model.eval()
    scores, embs, pending = [], [], []

    def flush():
        x = torch.from_numpy(np.concatenate(pending)).to(memory_format=torch.channels_last)
        outs = [model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        bounds = np.cumsum([len(p) for p in pending])[:-1]
        s = np.split(torch.cat([o[0] for o in outs]).numpy(), bounds)
        e = np.split(torch.cat([o[1] for o in outs]).numpy(), bounds)
        scores.extend(float(part.mean()) for part in s)  # images are flushed in input order
        embs.extend(part.mean(axis=0) for part in e)
        pending.clear()

    for img in tqdm(images, desc=desc, unit="img", disable=not progress, leave=False):
        pending.append(plan.normalize(plan.crops(img)))
        if sum(len(p) for p in pending) >= batch_size:
            flush()
    if pending:
        flush()
    scores = np.asarray(scores, np.float64)
    return (scores, np.stack(embs).astype(np.float32)) if embeddings else scores


def predict_meta(model: QFMStudent, meta: MetaInfo, plan: CropPlan, images=None, progress: bool = True,
                 embeddings: bool = False):
    imgs = images if images is not None else (load_rgb(s.path) for s in meta.samples)
    return predict_images(model, imgs, plan, desc=f"eval {meta.name}", progress=progress, embeddings=embeddings)
