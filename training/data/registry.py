"""Data sets by name: `load_dataset("livec")`, `load_dataset("path/to/mos.csv")`.

A registry entry is data (default root, reader, score scale), in the spirit of pyiqa's
default_dataset_configs.yml. A root holding our generic `mos.csv` is read as that instead of the
published layout, so converted copies (such as ../shared/data/livec_dev) work under the same name.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from training.data import readers
from training.data.meta import MetaInfo, ScoreScale

REPO_ROOT = Path(__file__).resolve().parents[2]
# Where published data sets are looked up by default: $QFM_DATA_ROOT/<name>.
DATA_ROOT = Path(os.environ.get("QFM_DATA_ROOT", REPO_ROOT / "data"))
# The generated synthetic benchmark (git-ignored; `python training/data/build_synthetic.py`).
SYNTHETIC_ROOT = Path(os.environ.get("QFM_SYNTHETIC_ROOT", REPO_ROOT / "data_cache" / "synthetic"))
LIVEC_DEV_ROOT = REPO_ROOT.parent / "shared" / "data" / "livec_dev"


@dataclass(frozen=True)
class DatasetEntry:
    reader: Callable[[Path], MetaInfo]
    scale: ScoreScale
    split_by: str
    default_root: Path


DATASETS: dict[str, DatasetEntry] = {
    "koniq10k": DatasetEntry(readers.read_koniq10k, ScoreScale(1, 5), "random", DATA_ROOT / "koniq10k"),
    "kadid10k": DatasetEntry(readers.read_kadid10k, ScoreScale(1, 5), "content", DATA_ROOT / "kadid10k"),
    "livec": DatasetEntry(readers.read_livec, ScoreScale(0, 100), "random",
                          LIVEC_DEV_ROOT if LIVEC_DEV_ROOT.exists() else DATA_ROOT / "livec"),
    "spaq": DatasetEntry(readers.read_spaq, ScoreScale(0, 100), "random", DATA_ROOT / "spaq"),
    "tid2013": DatasetEntry(readers.read_tid2013, ScoreScale(0, 9), "content", DATA_ROOT / "tid2013"),
    "csiq": DatasetEntry(readers.read_csiq, ScoreScale(0, 1, higher_better=False), "content", DATA_ROOT / "csiq"),
    "live": DatasetEntry(readers.read_live, ScoreScale(0, 100, higher_better=False), "content", DATA_ROOT / "live"),
    # Synthetic: labels derived from full-reference metrics on 0..100 (see synthetic/labels.py).
    "synthetic": DatasetEntry(None, ScoreScale(0, 100), "content", SYNTHETIC_ROOT),
}

SYNTHETIC_SPLITS = ("train", "test")


def load_dataset(name_or_csv: str, root: str | Path | None = None, split: str | None = None) -> MetaInfo:
    """A registered data set by name (from `root` or its default root), or any generic CSV path.

    `split` applies to the synthetic benchmark only ("train", "test" = held-out contents, or
    "all"); published data sets are split by the protocol (splits.py), not here.
    """
    if name_or_csv.endswith(".csv") or Path(name_or_csv).is_file():
        return readers.read_generic_csv(name_or_csv)
    if name_or_csv not in DATASETS:
        raise KeyError(f"unknown data set {name_or_csv!r}; known: {sorted(DATASETS)} or a path to a CSV "
                       "with columns image,mos[,mos_std,ref_id]")
    entry = DATASETS[name_or_csv]
    root = Path(root) if root is not None else entry.default_root
    if name_or_csv == "synthetic":
        return _load_synthetic(root, split or "test", entry)
    if split not in (None, "all"):
        raise ValueError(f"{name_or_csv}: fixed splits exist only for 'synthetic'; use the protocol's seeded splits")
    if (root / "mos.csv").exists():
        return readers.read_generic_csv(root / "mos.csv", name_or_csv, entry.scale, entry.split_by)
    return entry.reader(root)


def _load_synthetic(root: Path, split: str, entry: DatasetEntry) -> MetaInfo:
    parts = SYNTHETIC_SPLITS if split == "all" else (split,)
    if any(p not in SYNTHETIC_SPLITS for p in parts):
        raise ValueError(f"synthetic split must be one of {SYNTHETIC_SPLITS + ('all',)}, got {split!r}")
    metas = []
    for p in parts:
        csv_path = root / f"{p}.csv"
        if not csv_path.exists():
            raise FileNotFoundError(f"{csv_path} not found: generate the synthetic benchmark first with "
                                    "`python training/data/build_synthetic.py`")
        metas.append(readers.read_generic_csv(csv_path, "synthetic", entry.scale, "content"))
    return MetaInfo("synthetic", [s for m in metas for s in m.samples], entry.scale, "content",
                    {"split": split})
