"""Torch data sets over MetaInfo tables: decoded once into memory, random crops for training,
and a per-epoch mixture of several sources (e.g. synthetic + LIVEC)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler
from tqdm import tqdm

from training.data.meta import MetaInfo
from qfm_core.crops import load_rgb, normalize
from training.augment import random_crop

LABEL_KINDS = ("absolute", "within_reference")


class TrainSource(NamedTuple):
    """One `data.train` entry: a data set, how many of its images one epoch draws (all when None),
    and what its labels can be trusted for.

    labels="absolute": the score itself is the target (human MOS).
    labels="within_reference": only the differences between versions of one reference photograph
    are targets (full-reference labels: they say how much a distortion cost that photograph, and
    nothing about how good the pristine photograph is next to another one). Such a source is drawn
    in runs of `group_size` versions of one reference, so a batch holds the pairs to compare."""

    meta: MetaInfo
    samples_per_epoch: int | None = None
    labels: str = "absolute"
    group_size: int = 1


def as_train_source(s) -> TrainSource:
    """Accept the older (meta, samples_per_epoch) pairs as absolute-label sources."""
    src = s if isinstance(s, TrainSource) else TrainSource(*s)
    if src.labels not in LABEL_KINDS:
        raise ValueError(f"{src.meta.name}: labels must be one of {LABEL_KINDS}, got {src.labels!r}")
    if src.labels == "within_reference":
        if src.group_size < 2:
            raise ValueError(f"{src.meta.name}: within_reference labels need group_size >= 2, got {src.group_size}")
        if any(not x.ref_id for x in src.meta.samples):
            raise ValueError(f"{src.meta.name}: within_reference labels need a ref_id on every image")
    return src


def reference_codes(meta: MetaInfo) -> np.ndarray:
    """One integer per image naming its reference photograph (0..n_refs-1)."""
    _, codes = np.unique([s.ref_id for s in meta.samples], return_inverse=True)
    return codes.astype(np.int64)


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

    Items are (crop, target, group): `group` is -1 for absolute labels, else an id shared by every
    version of one reference photograph (see TrainSource; `groups` gives one id per image).

    `dither`: on half the crops, every pixel moves by a random whole number of grey levels in
    [-dither, dither]. Such changes are invisible (what two JPEG decoders or resamplers disagree by;
    the weakest synthetic noise is 4 grey levels) and keep the label; the hope was that the student
    stops reading them as noise (the bundled student moves by up to 30 points under +-1 grey level,
    benchmarks/noise_sensitivity.py). Measured: it does not, here (README, "Results"); kept as an
    option, off by default."""

    def __init__(self, cache: ImageCache, size: int, mean, std, seed: int, dither: int = 0,
                 groups: np.ndarray | None = None):
        self.cache, self.size, self.mean, self.std, self.seed = cache, size, mean, std, seed
        self.dither = int(dither)
        self.groups = np.full(len(cache), -1, np.int64) if groups is None else np.asarray(groups, np.int64)
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
        return torch.from_numpy(x), torch.tensor(self.cache.targets[i]), torch.tensor(self.groups[i])


class MixtureSampler(Sampler):
    """Each epoch draws `per_source[k]` indices from source k (all of it when None; with
    replacement only when asking for more than it has) and shuffles them together.

    `grouped[k] = (reference id per image, G)` draws source k instead as runs of G different versions of
    one reference photograph (references picked at random), rounded down to whole runs; the runs are
    shuffled with the other indices but stay contiguous, so they share a batch (unless one straddles
    a batch boundary). Without grouped sources the plan is exactly the ungrouped one."""

    def __init__(self, sizes: list[int], per_source: list[int | None], seed: int, global_batch: int = 0,
                 rank: int = 0, world: int = 1, grouped: list[tuple[np.ndarray, int] | None] | None = None):
        self.offsets = np.cumsum([0] + sizes[:-1])
        self.sizes, self.seed, self.epoch = sizes, seed, 0
        self.grouped = grouped or [None] * len(sizes)
        self.per_source = [self._wanted(s, w, g) for s, w, g in zip(sizes, per_source, self.grouped)]
        # For each grouped source, the indices of every reference's versions (fixed for the run).
        self.members = [None if g is None else [np.flatnonzero(g[0] == r) for r in np.unique(g[0])]
                        for g in self.grouped]
        # Distributed: every process draws the same plan; process r takes slice r of each global
        # batch (the trailing partial batch is dropped, as the loader's drop_last does anyway).
        self.global_batch, self.rank, self.world = global_batch, rank, world
        if world > 1 and (global_batch <= 0 or global_batch % world):
            raise ValueError(f"batch_size {global_batch} must be a positive multiple of the {world} processes")

    @staticmethod
    def _wanted(size: int, want: int | None, grouped) -> int | None:
        if grouped is None:
            return want
        return (size if want is None else want) // grouped[1] * grouped[1]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _plan(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        if not any(g is not None for g in self.grouped):
            parts = []
            for off, size, want in zip(self.offsets, self.sizes, self.per_source):
                want = size if want is None else want
                parts.append(off + rng.choice(size, want, replace=want > size))
            return rng.permutation(np.concatenate(parts))
        runs = []   # contiguous index runs: single images, or G versions of one reference
        for off, size, want, grouped, members in zip(self.offsets, self.sizes, self.per_source, self.grouped,
                                                     self.members):
            want = size if want is None else want
            if grouped is None:
                runs += [[i] for i in off + rng.choice(size, want, replace=want > size)]
                continue
            g = grouped[1]
            for ref in rng.choice(len(members), want // g):
                m = members[ref]
                runs.append(off + rng.choice(m, g, replace=len(m) < g))
        return np.concatenate([runs[k] for k in rng.permutation(len(runs))]).astype(np.int64)

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
