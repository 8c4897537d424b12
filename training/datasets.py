"""Torch data sets over MetaInfo tables: decoded once into memory, random crops for training,
and a per-epoch mixture of several sources (e.g. synthetic + LIVEC)."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from training.data.meta import MetaInfo
from training.transforms import load_rgb, normalize, random_crop


class ImageCache:
    """Decoded RGB images of a MetaInfo, held in memory (a few hundred MB for our sets), so
    epochs after the first cost no decoding on a 2-core machine."""

    def __init__(self, meta: MetaInfo, desc: str | None = None):
        self.meta = meta
        self.images = [load_rgb(s.path) for s in tqdm(meta.samples, desc=desc or f"decode {meta.name}",
                                                       unit="img", leave=False)]
        # Targets on the 0..100 scale the student predicts on.
        self.targets = np.asarray(meta.normalized_scores(), np.float32) * 100.0

    def __len__(self) -> int:
        return len(self.images)


class RandomCropDataset(Dataset):
    """Random crops (and mirror images) of the cached images, normalised for the student.

    `dither`: on half the crops, every pixel moves by a random whole number of grey levels in
    [-dither, dither]. Such changes are invisible (what two JPEG decoders or resamplers disagree by;
    the weakest synthetic noise is 4 grey levels) and keep the label; the hope was that the student
    stops reading them as noise (the bundled student moves by up to 30 points under +-1 grey level,
    benchmarks/noise_sensitivity.py). Measured: it does not, here (README, "Results"); kept as an
    option, off by default."""

    def __init__(self, cache: ImageCache, size: int, mean, std, seed: int, dither: int = 0):
        self.cache, self.size, self.mean, self.std, self.seed = cache, size, mean, std, seed
        self.dither = int(dither)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.cache)

    def __getitem__(self, i: int):
        # The crop depends only on (seed, epoch, index): a resumed run sees the same crops.
        rng = np.random.default_rng([self.seed, self.epoch, i])
        crop = random_crop(self.cache.images[i], self.size, rng)
        if self.dither and rng.random() < 0.5:
            noise = rng.integers(-self.dither, self.dither + 1, crop.shape, dtype=np.int16)
            crop = np.clip(crop.astype(np.int16) + noise, 0, 255).astype(np.uint8)
        x = normalize(np.ascontiguousarray(crop)[None], self.mean, self.std)[0]
        return torch.from_numpy(x), torch.tensor(self.cache.targets[i])


class MixtureSampler(Sampler):
    """Each epoch draws `per_source[k]` indices from source k (all of it when None; with
    replacement only when asking for more than it has) and shuffles them together."""

    def __init__(self, sizes: list[int], per_source: list[int | None], seed: int, global_batch: int = 0,
                 rank: int = 0, world: int = 1):
        self.offsets = np.cumsum([0] + sizes[:-1])
        self.sizes, self.per_source, self.seed, self.epoch = sizes, per_source, seed, 0
        # Distributed: every process draws the same plan; process r takes slice r of each global
        # batch (the trailing partial batch is dropped, as the loader's drop_last does anyway).
        self.global_batch, self.rank, self.world = global_batch, rank, world
        if world > 1 and (global_batch <= 0 or global_batch % world):
            raise ValueError(f"batch_size {global_batch} must be a positive multiple of the {world} processes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        parts = []
        for off, size, want in zip(self.offsets, self.sizes, self.per_source):
            want = size if want is None else want
            parts.append(off + rng.choice(size, want, replace=want > size))
        return rng.permutation(np.concatenate(parts))

    def _total(self) -> int:
        return int(sum(s if w is None else w for s, w in zip(self.sizes, self.per_source)))

    def __iter__(self):
        plan = self._plan()
        if self.world > 1:
            per = self.global_batch // self.world
            batches = plan[: len(plan) // self.global_batch * self.global_batch].reshape(-1, self.global_batch)
            plan = batches[:, self.rank * per:(self.rank + 1) * per].reshape(-1)
        return iter(plan.tolist())

    def __len__(self) -> int:
        if self.world > 1:
            return self._total() // self.global_batch * (self.global_batch // self.world)
        return self._total()
