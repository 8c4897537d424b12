"""From crops back to images: an image's score and quality embedding are the means over its
crops (the paper's multi-crop testing; training.inference computes the same)."""
from __future__ import annotations

import numpy as np


def mean_per_image(crop_scores: np.ndarray, crop_embeddings: np.ndarray, counts: np.ndarray
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(N,) float32 scores and (N, D) float32 embeddings from K crop scores, (K, D) crop
    embeddings and N crop counts (image i owns the next counts[i] crops; sum(counts) == K)."""
    scores = np.asarray(crop_scores, np.float64).reshape(-1)
    counts = np.asarray(counts, np.int64).reshape(-1)
    if counts.sum() != len(scores) or len(scores) != len(crop_embeddings) or (counts <= 0).any():
        raise ValueError(f"crop counts {counts.tolist()} do not match {len(scores)} crop scores "
                         f"and {len(crop_embeddings)} crop embeddings")
    owner = np.repeat(np.arange(len(counts)), counts)
    score = np.bincount(owner, weights=scores, minlength=len(counts)) / counts
    emb = np.zeros((len(counts), crop_embeddings.shape[1]), np.float64)
    np.add.at(emb, owner, crop_embeddings)
    return score.astype(np.float32), (emb / counts[:, None]).astype(np.float32)
