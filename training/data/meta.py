"""The one meta-info form every data set is converted to, and the one place MOS is normalised.

Like pyiqa's meta-info CSVs: each data set becomes a table of (image path, MOS, optional MOS
std, optional reference/content id). Readers for published layouts (readers.py) produce it; the
training and evaluation code only ever sees this form.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

from qfm_core.files import atomic_path

META_COLUMNS = ("image", "mos", "mos_std", "ref_id")


@dataclass(frozen=True)
class Sample:
    path: Path  # absolute path of the image file
    mos: float  # raw opinion score in the data set's own scale
    ref_id: str = ""  # reference (pristine) content id; "" for authentic data sets
    mos_std: float | None = None


@dataclass(frozen=True)
class ScoreScale:
    """A data set's score range and direction (pyiqa's `score_range` / `lower_better`)."""

    lo: float
    hi: float
    higher_better: bool = True


@dataclass
class MetaInfo:
    name: str
    samples: list[Sample]
    scale: ScoreScale
    # "content": 80/20 splits keep all distortions of one reference on one side (synthetic sets);
    # "random": authentic sets, one image per content.
    split_by: str = "random"
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    def normalized_scores(self) -> list[float]:
        return [normalize_mos(s.mos, self.scale) for s in self.samples]

    def subset(self, indices) -> "MetaInfo":
        return MetaInfo(self.name, [self.samples[i] for i in indices], self.scale, self.split_by, dict(self.extra))


def normalize_mos(mos: float, scale: ScoreScale) -> float:
    """Map a raw MOS/DMOS to [0, 1], higher = better quality. The only MOS normalisation."""
    x = (mos - scale.lo) / (scale.hi - scale.lo)
    return x if scale.higher_better else 1.0 - x


def write_meta_csv(meta: MetaInfo, csv_path: str | os.PathLike) -> None:
    """Write the generic CSV form with image paths relative to the CSV's folder (atomic)."""
    csv_path = Path(csv_path)
    root = csv_path.parent.resolve()
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(META_COLUMNS)
        for s in meta.samples:
            rel = os.path.relpath(Path(s.path).resolve(), root)
            w.writerow([rel, f"{s.mos:.6f}", "" if s.mos_std is None else f"{s.mos_std:.6f}", s.ref_id])
