"""ONNX Runtime vs PyTorch on the same crops: the numbers behind the export's parity claims."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from scipy import stats

from qfm_core import io_names
from training.models.student import QFMStudent
from qfm_core.crops import grid_crops, normalize


def parity_images(n_images: int = 24, seed: int = 0) -> list[tuple[np.ndarray, str, int]]:
    """(image, distortion, level) for held-out synthetic-benchmark photographs, generated here
    (held-out photographs x random distortion levels; deterministic by seed)."""
    from training.data.build_synthetic import split_photos, square_views
    from training.data.synthetic.distortions import DISTORTIONS, N_LEVELS, apply
    from training.data.synthetic.photos import PHOTOS, load_photo

    rng = np.random.default_rng(seed)
    names = sorted(DISTORTIONS)
    test_photos = [p for p in PHOTOS if p.name in split_photos(0, 0.2)]
    out = []
    for k in range(n_images):
        photo = test_photos[k % len(test_photos)]
        ref = square_views(load_photo(photo), 288)[0][1]
        name, level = names[rng.integers(len(names))], int(rng.integers(1, N_LEVELS + 1))
        out.append((apply(name, ref, level, np.random.default_rng([seed, k])), name, level))
    return out


def parity_crops(model: QFMStudent, n_images: int = 24, grid: int = 2, seed: int = 0) -> np.ndarray:
    """Normalised evaluation crops (grid x grid per image, image by image) of parity_images()."""
    return crops_of(model, [im for im, _, _ in parity_images(n_images, seed)], grid)


def crops_of(model: QFMStudent, images: list[np.ndarray], grid: int) -> np.ndarray:
    """Normalised grid x grid crops of each image, image by image, for this student."""
    crops = np.concatenate([grid_crops(im, model.cfg.input_size, grid) for im in images])
    return normalize(crops, model.cfg.mean, model.cfg.std)


def ort_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(session: ort.InferenceSession, x: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    dtype = {"tensor(float16)": np.float16, "tensor(uint8)": np.uint8}.get(session.get_inputs()[0].type, np.float32)
    scores, embs = [], []
    for i in range(0, len(x), batch):
        s, e = session.run([io_names.CROP_SCORES, io_names.CROP_EMBEDDINGS], {io_names.CROPS: x[i:i + batch].astype(dtype)})
        scores.append(s)
        embs.append(e)
    return np.concatenate(scores), np.concatenate(embs)


@torch.no_grad()
def run_torch(model: QFMStudent, x: np.ndarray, batch: int = 16) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    outs = [model(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)]
    return torch.cat([o[0] for o in outs]).numpy(), torch.cat([o[1] for o in outs]).numpy()


def compare(reference: tuple[np.ndarray, np.ndarray], candidate: tuple[np.ndarray, np.ndarray]) -> dict:
    (rs, re), (cs, ce) = reference, candidate
    cos = (re * ce).sum(1) / (np.linalg.norm(re, axis=1) * np.linalg.norm(ce, axis=1) + 1e-12)
    return {"max_abs_score_diff": float(np.abs(rs - cs).max()),
            "mean_abs_score_diff": float(np.abs(rs - cs).mean()),
            "srcc_vs_reference": float(stats.spearmanr(rs, cs)[0]),
            "max_abs_embedding_diff": float(np.abs(re - ce).max()),
            "min_embedding_cosine": float(cos.min()), "n_crops": int(len(rs))}
