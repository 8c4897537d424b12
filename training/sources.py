"""The data sources of a config's `data` section: TrainSources for `data.train`, the validation
data set for `data.val`. Shared by training/train.py, training/protocol.py and the tests."""
from __future__ import annotations

from training.data.meta import MetaInfo
from training.data.registry import load_dataset
from training.datasets import TrainSource, as_train_source

SOURCE_KEYS = {"dataset", "root", "split", "samples_per_epoch", "labels", "group_size"}


def train_source(entry: dict, meta: MetaInfo | None = None) -> TrainSource:
    """The TrainSource of one `data.train` entry, {dataset, root, split, samples_per_epoch,
    labels: absolute|within_reference, group_size}; `meta` replaces the entry's data set (the
    protocol's 80 % split of it)."""
    unknown = set(entry) - SOURCE_KEYS
    if unknown:
        raise KeyError(f"unknown key(s) {sorted(unknown)} in data.train entry {entry}; known: {sorted(SOURCE_KEYS)}")
    labels = entry.get("labels", "absolute")
    group = entry.get("group_size", 4 if labels == "within_reference" else 1)
    if meta is None:
        meta = load_dataset(entry["dataset"], entry.get("root"), entry.get("split"))
    return as_train_source(TrainSource(meta, entry.get("samples_per_epoch"), labels, group))


def load_sources(entries: list[dict]) -> list[TrainSource]:
    """A TrainSource for each `data.train` entry of a config."""
    return [train_source(e) for e in entries]


def load_val(entry: dict | None):
    return None if not entry else load_dataset(entry["dataset"], entry.get("root"), entry.get("split"))
