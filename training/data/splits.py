"""The paper's evaluation protocol: seeded 80/20 splits, N repeats, the median reported."""
from __future__ import annotations

import statistics
from typing import Callable

import numpy as np

from training.data.meta import MetaInfo


def protocol_split(meta: MetaInfo, seed: int, train_fraction: float = 0.8) -> tuple[list[int], list[int]]:
    """Indices of one seeded train/test split.

    Authentic sets ("random") split images at random; synthetic sets ("content") split reference
    contents, so no distorted version of a test content is ever seen in training.
    """
    rng = np.random.default_rng(seed)
    if meta.split_by == "content":
        refs = sorted({s.ref_id for s in meta.samples})
        if len(refs) < 2:
            raise ValueError(f"{meta.name}: content split needs at least 2 reference ids, found {len(refs)}")
        order = rng.permutation(len(refs))
        n_train = min(max(1, round(train_fraction * len(refs))), len(refs) - 1)
        train_refs = {refs[i] for i in order[:n_train]}
        train = [i for i, s in enumerate(meta.samples) if s.ref_id in train_refs]
        test = [i for i, s in enumerate(meta.samples) if s.ref_id not in train_refs]
        return train, test
    order = rng.permutation(len(meta.samples))
    n_train = min(max(1, round(train_fraction * len(order))), len(order) - 1)
    return sorted(order[:n_train].tolist()), sorted(order[n_train:].tolist())


def run_protocol(meta: MetaInfo, seeds: list[int], train_and_test: Callable[[MetaInfo, MetaInfo, int], dict],
                 train_fraction: float = 0.8) -> dict:
    """Run `train_and_test(train_meta, test_meta, seed) -> metrics` on each seeded split and
    report every run plus the per-metric median (the figure the paper reports)."""
    runs = []
    for seed in seeds:
        train_idx, test_idx = protocol_split(meta, seed, train_fraction)
        metrics = train_and_test(meta.subset(train_idx), meta.subset(test_idx), seed)
        runs.append({"seed": seed, **metrics})
    keys = [k for k, v in runs[0].items() if k != "seed" and isinstance(v, (int, float))]
    return {"runs": runs, "median": {k: statistics.median(r[k] for r in runs) for k in keys},
            "n_repeats": len(seeds), "train_fraction": train_fraction}
