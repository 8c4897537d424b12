"""Multi-crop prediction, as the paper evaluates: the mean score over a grid of crops."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from training.data.meta import MetaInfo
from training.models.student import QFMStudent
from training.transforms import grid_crops, load_rgb, normalize


@torch.no_grad()
def predict_images(model: QFMStudent, images, grid: int = 3, batch_size: int = 32, desc: str = "predict",
                   progress: bool = True) -> np.ndarray:
    """Scores (0..100) of an iterable of HxWx3 uint8 images, each the mean over its crop grid."""
    model.eval()
    cfg = model.cfg
    scores, pending, owners = [], [], []

    def flush():
        x = torch.from_numpy(np.concatenate(pending)).to(memory_format=torch.channels_last)
        out = torch.cat([model(x[i:i + batch_size])[0] for i in range(0, len(x), batch_size)]).numpy()
        for owner, s in zip(owners, np.split(out, np.cumsum([len(p) for p in pending])[:-1])):
            scores.append((owner, float(s.mean())))
        pending.clear()
        owners.clear()

    for i, img in enumerate(tqdm(images, desc=desc, unit="img", disable=not progress, leave=False)):
        pending.append(normalize(grid_crops(img, cfg.input_size, grid), cfg.mean, cfg.std))
        owners.append(i)
        if sum(len(p) for p in pending) >= batch_size:
            flush()
    if pending:
        flush()
    return np.asarray([s for _, s in sorted(scores)], np.float64)


def predict_meta(model: QFMStudent, meta: MetaInfo, grid: int = 3, images=None, progress: bool = True) -> np.ndarray:
    imgs = images if images is not None else (load_rgb(s.path) for s in meta.samples)
    return predict_images(model, imgs, grid=grid, desc=f"eval {meta.name}", progress=progress)
