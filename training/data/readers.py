"""Readers for the published layouts of the IQA data sets the paper uses.

Each reader takes the data set's root folder as distributed and returns a MetaInfo (meta.py).
The layouts are the ones the original releases ship; a root that already holds our generic
`mos.csv` is read by `read_generic_csv` instead (see registry.py).
"""
from __future__ import annotations

import csv
import re
from pathlib import Path

from training.data.meta import MetaInfo, Sample, ScoreScale


class DatasetLayoutError(FileNotFoundError):
    """The folder does not hold the files a published layout must have."""


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise DatasetLayoutError(f"{what}: expected {path} (is --root the data set's top folder?)")
    return path


def _float_or_none(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def read_generic_csv(csv_path: str | Path, name: str | None = None, scale: ScoreScale | None = None,
                     split_by: str | None = None) -> MetaInfo:
    """Generic CSV: columns `image` (path relative to the CSV) and `mos`; optional `mos_std`,
    `ref_id`. Without an explicit scale the score range is taken from the data (min..max)."""
    csv_path = _require(Path(csv_path), "generic CSV")
    root = csv_path.parent
    samples = []
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"image", "mos"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path}: missing column(s) {sorted(missing)}; need image,mos[,mos_std,ref_id]")
        for row in reader:
            samples.append(Sample(root / row["image"], float(row["mos"]), row.get("ref_id") or "",
                                  _float_or_none(row.get("mos_std"))))
    if not samples:
        raise ValueError(f"{csv_path}: no rows")
    if scale is None:
        scores = [s.mos for s in samples]
        scale = ScoreScale(min(scores), max(scores)) if max(scores) > min(scores) else ScoreScale(0.0, 1.0)
    if split_by is None:
        split_by = "content" if any(s.ref_id for s in samples) else "random"
    return MetaInfo(name or csv_path.stem, samples, scale, split_by)


def read_koniq10k(root: Path) -> MetaInfo:
    """KonIQ-10k: koniq10k_scores_and_distributions.csv + 1024x768/ (MOS on 1..5)."""
    table = _require(root / "koniq10k_scores_and_distributions.csv", "KonIQ-10k scores")
    with open(table, newline="") as f:
        samples = [Sample(root / "1024x768" / r["image_name"], float(r["MOS"]), "", _float_or_none(r.get("SD")))
                   for r in csv.DictReader(f)]
    return MetaInfo("koniq10k", samples, ScoreScale(1.0, 5.0), "random")


def read_kadid10k(root: Path) -> MetaInfo:
    """KADID-10k: dmos.csv (dist_img, ref_img, dmos, var) + images/. Its "dmos" is 1..5, higher better."""
    table = _require(root / "dmos.csv", "KADID-10k dmos.csv")
    with open(table, newline="") as f:
        samples = [Sample(root / "images" / r["dist_img"], float(r["dmos"]), Path(r["ref_img"]).stem,
                          float(r["var"]) ** 0.5 if r.get("var") else None) for r in csv.DictReader(f)]
    return MetaInfo("kadid10k", samples, ScoreScale(1.0, 5.0), "content")


def _mat_strings(cell) -> list[str]:
    """Flatten a MATLAB cell array of char arrays (as scipy.io.loadmat returns it) to strings."""
    import numpy as np

    out = []
    for item in np.asarray(cell, dtype=object).ravel():
        while isinstance(item, np.ndarray):
            item = item.ravel()[0] if item.size else ""
        out.append(str(item))
    return out


def read_livec(root: Path) -> MetaInfo:
    """LIVE In the Wild Challenge: Images/, Data/AllImages_release.mat, Data/AllMOS_release.mat
    (MOS 0..100), optional Data/AllStdDev_release.mat. The 7 training images (t1..t7) are
    dropped, as every published protocol does."""
    from scipy.io import loadmat

    names = _mat_strings(loadmat(_require(root / "Data" / "AllImages_release.mat", "LIVEC image list"))["AllImages_release"])
    mos = loadmat(_require(root / "Data" / "AllMOS_release.mat", "LIVEC MOS"))["AllMOS_release"].ravel()
    std_path = root / "Data" / "AllStdDev_release.mat"
    std = loadmat(std_path)["AllStdDev_release"].ravel() if std_path.exists() else [None] * len(names)
    if len(names) != len(mos):
        raise ValueError(f"LIVEC: {len(names)} image names but {len(mos)} scores")
    samples = [Sample(root / "Images" / n, float(m), "", None if s is None else float(s))
               for n, m, s in zip(names, mos, std) if not re.fullmatch(r"t\d+\.bmp", n)]
    return MetaInfo("livec", samples, ScoreScale(0.0, 100.0), "random")


def _read_xlsx_rows(path: Path, sheet: str | None = None) -> list[dict]:
    from openpyxl import load_workbook

    wb = load_workbook(path, read_only=True, data_only=True)
    ws = wb[sheet] if sheet else wb.worksheets[0]
    rows = ws.iter_rows(values_only=True)
    header = [str(h).strip() if h is not None else "" for h in next(rows)]
    return [dict(zip(header, r)) for r in rows if any(v is not None for v in r)]


def read_spaq(root: Path) -> MetaInfo:
    """SPAQ: Annotations/MOS and Image attribute scores.xlsx (Image name, MOS 0..100) + TestImage/."""
    rows = _read_xlsx_rows(_require(root / "Annotations" / "MOS and Image attribute scores.xlsx", "SPAQ annotations"))
    samples = [Sample(root / "TestImage" / str(r["Image name"]), float(r["MOS"])) for r in rows]
    return MetaInfo("spaq", samples, ScoreScale(0.0, 100.0), "random")


def read_tid2013(root: Path) -> MetaInfo:
    """TID2013: mos_with_names.txt ("<mos> <name>", MOS 0..9) + distorted_images/."""
    table = _require(root / "mos_with_names.txt", "TID2013 mos_with_names.txt")
    samples = []
    for line in table.read_text().splitlines():
        if line.strip():
            mos, name = line.split()
            samples.append(Sample(root / "distorted_images" / name, float(mos), name[:3].lower()))
    return MetaInfo("tid2013", samples, ScoreScale(0.0, 9.0), "content")


# CSIQ's spreadsheet names distortions differently from its folders and file names.
_CSIQ_TYPES = {"noise": ("awgn", "AWGN"), "jpeg": ("jpeg", "JPEG"), "jpeg 2000": ("jpeg2000", "jpeg2000"),
               "fnoise": ("fnoise", "fnoise"), "blur": ("blur", "BLUR"), "contrast": ("contrast", "contrast")}


def read_csiq(root: Path) -> MetaInfo:
    """CSIQ: csiq.DMOS.xlsx (sheet all_by_image: image, dst_type, dst_lev, dmos; DMOS 0..1, lower
    better) + dst_imgs/<type>/<image>.<TYPE>.<level>.png."""
    rows = _read_xlsx_rows(_require(root / "csiq.DMOS.xlsx", "CSIQ csiq.DMOS.xlsx"), "all_by_image")
    samples = []
    for r in rows:
        folder, tag = _CSIQ_TYPES[str(r["dst_type"]).strip().lower()]
        image = str(r["image"]).strip()
        samples.append(Sample(root / "dst_imgs" / folder / f"{image}.{tag}.{int(r['dst_lev'])}.png",
                              float(r["dmos"]), image, _float_or_none(r.get("dmos_std"))))
    return MetaInfo("csiq", samples, ScoreScale(0.0, 1.0, higher_better=False), "content")


# LIVE Release 2 orders its 982 scores by folder, each folder's images img1..imgN.
_LIVE_FOLDERS = (("jp2k", 227), ("jpeg", 233), ("wn", 174), ("gblur", 174), ("fastfading", 174))


def read_live(root: Path) -> MetaInfo:
    """LIVE IQA Release 2: dmos.mat (dmos, orgs), refnames_all.mat + jp2k/ jpeg/ wn/ gblur/
    fastfading/ (DMOS 0..100, lower better). Reference copies (orgs == 1) are dropped."""
    from scipy.io import loadmat

    d = loadmat(_require(root / "dmos.mat", "LIVE dmos.mat"))
    dmos, orgs = d["dmos"].ravel(), d["orgs"].ravel()
    refs = _mat_strings(loadmat(_require(root / "refnames_all.mat", "LIVE refnames_all.mat"))["refnames_all"])
    paths = [root / folder / f"img{i}.bmp" for folder, n in _LIVE_FOLDERS for i in range(1, n + 1)]
    if not (len(paths) == len(dmos) == len(orgs) == len(refs)):
        raise ValueError(f"LIVE: expected {len(paths)} entries, got dmos={len(dmos)} refs={len(refs)}")
    samples = [Sample(p, float(m), Path(r).stem) for p, m, o, r in zip(paths, dmos, orgs, refs) if not o]
    return MetaInfo("live", samples, ScoreScale(0.0, 100.0, higher_better=False), "content")
