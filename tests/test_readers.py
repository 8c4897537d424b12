"""Each published layout, built as a small fixture, read into the meta-info form."""
import csv

import numpy as np
import pytest
from openpyxl import Workbook
from scipy.io import savemat

from conftest import write_image
from training.data import readers
from training.data.meta import ScoreScale, normalize_mos, write_meta_csv
from training.data.registry import load_dataset


def _assert_files(meta, n):
    assert len(meta) == n
    assert all(s.path.exists() for s in meta.samples), [s.path for s in meta.samples if not s.path.exists()]
    norm = meta.normalized_scores()
    assert all(-1e-9 <= v <= 1 + 1e-9 for v in norm)


def test_normalize_direction():
    assert normalize_mos(5, ScoreScale(1, 5)) == 1.0
    assert normalize_mos(0.0, ScoreScale(0, 1, higher_better=False)) == 1.0
    assert normalize_mos(75, ScoreScale(0, 100, higher_better=False)) == pytest.approx(0.25)


def test_koniq(tmp_path):
    with open(tmp_path / "koniq10k_scores_and_distributions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_name", "c1", "c2", "c3", "c4", "c5", "c_total", "MOS", "SD", "MOS_zscore"])
        for i in range(3):
            write_image(tmp_path / "1024x768" / f"{i}.jpg", seed=i)
            w.writerow([f"{i}.jpg", 1, 1, 1, 1, 1, 5, 1.5 + i, 0.5, 30 + i])
    meta = readers.read_koniq10k(tmp_path)
    _assert_files(meta, 3)
    assert [s.mos for s in meta.samples] == [1.5, 2.5, 3.5]
    assert meta.split_by == "random"


def test_kadid(tmp_path):
    with open(tmp_path / "dmos.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dist_img", "ref_img", "dmos", "var"])
        for r in (1, 2):
            for d in (1, 2):
                name = f"I{r:02d}_{d:02d}_01.png"
                write_image(tmp_path / "images" / name)
                w.writerow([name, f"I{r:02d}.png", 4.0 - d, 0.25])
    meta = readers.read_kadid10k(tmp_path)
    _assert_files(meta, 4)
    assert {s.ref_id for s in meta.samples} == {"I01", "I02"}
    assert meta.samples[0].mos_std == pytest.approx(0.5)


def test_livec_published_layout(tmp_path):
    names = ["t1.bmp", "t2.bmp", "10.bmp", "11.bmp", "12.bmp"]
    for i, n in enumerate(names):
        write_image(tmp_path / "Images" / n, seed=i)
    (tmp_path / "Data").mkdir()
    cell = np.empty((len(names), 1), dtype=object)
    for i, n in enumerate(names):
        cell[i, 0] = np.array([n])
    savemat(tmp_path / "Data" / "AllImages_release.mat", {"AllImages_release": cell})
    savemat(tmp_path / "Data" / "AllMOS_release.mat", {"AllMOS_release": np.array([[50, 60, 10.0, 55.5, 90.0]])})
    meta = readers.read_livec(tmp_path)
    _assert_files(meta, 3)  # the t1..t7 training images are dropped
    assert [s.path.name for s in meta.samples] == ["10.bmp", "11.bmp", "12.bmp"]
    assert [s.mos for s in meta.samples] == [10.0, 55.5, 90.0]


def _xlsx(path, sheet, header, rows):
    wb = Workbook()
    ws = wb.active
    ws.title = sheet
    ws.append(header)
    for r in rows:
        ws.append(r)
    path.parent.mkdir(parents=True, exist_ok=True)
    wb.save(path)


def test_spaq(tmp_path):
    for i in range(3):
        write_image(tmp_path / "TestImage" / f"{i:05d}.jpg", seed=i)
    _xlsx(tmp_path / "Annotations" / "MOS and Image attribute scores.xlsx", "Sheet1",
          ["Image name", "MOS", "Brightness"], [[f"{i:05d}.jpg", 20.0 * (i + 1), 50] for i in range(3)])
    meta = readers.read_spaq(tmp_path)
    _assert_files(meta, 3)
    assert meta.samples[2].mos == 60.0


def test_tid2013(tmp_path):
    lines = []
    for r in (1, 25):
        for d in (1, 2):
            name = f"i{r:02d}_{d:02d}_1.bmp" if r != 25 else f"I{r:02d}_{d:02d}_1.bmp"
            write_image(tmp_path / "distorted_images" / name)
            lines.append(f"{5.0 - d:.5f} {name}")
    (tmp_path / "mos_with_names.txt").write_text("\n".join(lines) + "\n")
    meta = readers.read_tid2013(tmp_path)
    _assert_files(meta, 4)
    assert {s.ref_id for s in meta.samples} == {"i01", "i25"}  # case-insensitive content ids


def test_csiq(tmp_path):
    rows = []
    for img in ("1600", "boston"):
        for dtype, (folder, tag) in (("noise", ("awgn", "AWGN")), ("jpeg 2000", ("jpeg2000", "jpeg2000"))):
            write_image(tmp_path / "dst_imgs" / folder / f"{img}.{tag}.2.png")
            rows.append([img, 1, dtype, 2, 0.02, 0.3])
    _xlsx(tmp_path / "csiq.DMOS.xlsx", "all_by_image", ["image", "dst_idx", "dst_type", "dst_lev", "dmos_std", "dmos"], rows)
    meta = readers.read_csiq(tmp_path)
    _assert_files(meta, 4)
    assert meta.scale.higher_better is False
    assert meta.normalized_scores()[0] == pytest.approx(0.7)


def test_live(tmp_path):
    counts = dict(readers._LIVE_FOLDERS)
    total = sum(counts.values())
    for folder, n in readers._LIVE_FOLDERS:
        for i in (1, n):  # the reader needs only the files it returns; make a few
            write_image(tmp_path / folder / f"img{i}.bmp", size=(8, 8))
    orgs = np.ones(total)
    keep = [0, counts["jp2k"] - 1, total - 1]  # first and last jp2k, last fastfading
    orgs[keep] = 0
    refs = np.empty((1, total), dtype=object)
    for i in range(total):
        refs[0, i] = np.array([f"ref{i % 3}.bmp"])
    savemat(tmp_path / "dmos.mat", {"dmos": np.linspace(0, 100, total)[None], "orgs": orgs[None]})
    savemat(tmp_path / "refnames_all.mat", {"refnames_all": refs})
    meta = readers.read_live(tmp_path)
    _assert_files(meta, 3)
    assert [s.path.parent.name + "/" + s.path.name for s in meta.samples] == [
        "jp2k/img1.bmp", "jp2k/img227.bmp", "fastfading/img174.bmp"]


def test_generic_csv_roundtrip_and_errors(tmp_path):
    for i in range(4):
        write_image(tmp_path / "imgs" / f"{i}.png", seed=i)
    (tmp_path / "mos.csv").write_text("image,mos,ref_id\n" + "".join(f"imgs/{i}.png,{i * 10},r{i % 2}\n" for i in range(4)))
    meta = load_dataset(str(tmp_path / "mos.csv"))
    _assert_files(meta, 4)
    assert meta.split_by == "content" and meta.scale.lo == 0 and meta.scale.hi == 30
    write_meta_csv(meta, tmp_path / "copy.csv")
    again = load_dataset(str(tmp_path / "copy.csv"))
    assert [s.path.resolve() for s in again.samples] == [s.path.resolve() for s in meta.samples]
    (tmp_path / "bad.csv").write_text("path,score\nx.png,1\n")
    with pytest.raises(ValueError, match="missing column"):
        load_dataset(str(tmp_path / "bad.csv"))
    with pytest.raises(KeyError, match="unknown data set"):
        load_dataset("no_such_set")
    with pytest.raises(readers.DatasetLayoutError):
        load_dataset("koniq10k", root=tmp_path / "nowhere")


def test_real_livec_dev(livec_dev):
    meta = load_dataset("livec")
    _assert_files(meta, 775)
    assert meta.scale == ScoreScale(0, 100)
