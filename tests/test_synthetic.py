"""The synthetic benchmark: distortion coverage, label sanity, determinism, split hygiene."""
import csv
import filecmp

import numpy as np
import pytest

from training.data import build_synthetic as bs
from training.data.registry import load_dataset
from training.data.synthetic.distortions import DISTORTIONS, N_LEVELS, apply
from training.data.synthetic.labels import full_reference_metrics, metrics_to_label
from training.data.synthetic.photos import PHOTOS, load_photo


@pytest.fixture(scope="module")
def astronaut():
    return bs.square_views(load_photo(next(p for p in PHOTOS if p.name == "astronaut")), 224)[0][1]


def test_coverage_and_licences():
    assert len(DISTORTIONS) >= 12 and N_LEVELS == 5
    assert {"jpeg", "webp", "gaussian_blur", "white_noise", "pixelate", "quantize"} <= set(DISTORTIONS)
    assert all(p.licence and p.source for p in PHOTOS)
    assert len({p.name for p in PHOTOS}) == len(PHOTOS)


def test_held_out_photographs_never_move():
    # Every synthetic figure in README and metrics.json was measured on these five photographs;
    # train-only additions (holdout=False) must not change the draw.
    held_out = bs.split_photos(0, 0.2)
    assert held_out == {"coffee", "immunohistochemistry", "mate_aqua", "mate_storm", "rocket"}
    assert any(not p.holdout for p in PHOTOS)
    assert not held_out & {p.name for p in PHOTOS if not p.holdout}


def test_distortions_are_deterministic_and_well_formed(astronaut):
    for name in DISTORTIONS:
        a = apply(name, astronaut, 3, np.random.default_rng(5))
        b = apply(name, astronaut, 3, np.random.default_rng(5))
        assert a.dtype == np.uint8 and a.shape == astronaut.shape
        assert np.array_equal(a, b), name
        assert not np.array_equal(a, astronaut), f"{name} level 3 left the image unchanged"
    with pytest.raises(KeyError):
        apply("nope", astronaut, 1, np.random.default_rng(0))
    with pytest.raises(ValueError):
        apply("jpeg", astronaut, 6, np.random.default_rng(0))


def test_labels_fall_with_every_distortion_level(astronaut):
    """On a colour photograph, each type's FR-derived label strictly decreases from level 1 to 5."""
    for name in DISTORTIONS:
        imgs = [apply(name, astronaut, lv, np.random.default_rng(lv)) for lv in range(1, N_LEVELS + 1)]
        labels = metrics_to_label(full_reference_metrics(imgs, astronaut))
        assert np.all(np.diff(labels) < 0), f"{name}: {np.round(labels, 1)}"
        assert 0 <= labels.min() and labels.max() <= 100
    same = metrics_to_label(full_reference_metrics([astronaut], astronaut))
    assert same[0] == pytest.approx(100, abs=0.5)


def test_photo_build_is_reproducible(tmp_path):
    rows = []
    for k in range(2):
        d = tmp_path / f"b{k}" / "images"
        d.mkdir(parents=True)
        rows.append(bs.build_photo(1, 224, 0, "train", d))
    assert rows[0] == rows[1]
    diff = filecmp.dircmp(tmp_path / "b0" / "images", tmp_path / "b1" / "images")
    assert not diff.diff_files and not diff.left_only and len(diff.same_files) == len(rows[0])


def _small(mp) -> None:
    """Four photos and three distortions keep builds quick; the code path is the real one."""
    mp.setattr(bs, "PHOTOS", PHOTOS[:4])
    keep = {k: DISTORTIONS[k] for k in ("jpeg", "gaussian_blur", "white_noise")}
    mp.setattr(bs, "DISTORTIONS", keep)
    import training.data.synthetic.distortions as dmod

    mp.setattr(dmod, "DISTORTIONS", keep)
    mp.setattr(bs, "split_photos", lambda seed, frac: {PHOTOS[1].name})


@pytest.fixture
def small_benchmark(monkeypatch):
    _small(monkeypatch)


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    """The small benchmark built whole, once: the layout test reads it, the resume test compares
    an interrupted build against it."""
    out = tmp_path_factory.mktemp("small") / "synthetic"
    with pytest.MonkeyPatch.context() as mp:
        _small(mp)
        info = bs.build(out, size=224, seed=0, test_fraction=0.25, workers=1)
    return out, info


@pytest.mark.slow
def test_full_build_layout_and_split_hygiene(tmp_path, small_build):
    out, info = small_build
    assert not out.with_name("synthetic.partial").exists()
    train, test = load_dataset("synthetic", out, "train"), load_dataset("synthetic", out, "test")
    assert {s.ref_id for s in test.samples} == {PHOTOS[1].name}
    assert not {s.ref_id for s in train.samples} & {s.ref_id for s in test.samples}
    assert len(train) + len(test) == sum(info["counts"].values())
    with open(out / "test.csv") as f:
        levels = {(r["distortion"], r["level"]) for r in csv.DictReader(f)}
    assert len(levels) == 3 * 5 + 1  # three types x five levels + the pristine reference
    assert "SYNTHETIC" in (out / "SOURCES.md").read_text()
    with pytest.raises(FileNotFoundError, match="build_synthetic"):
        load_dataset("synthetic", tmp_path / "absent", "test")


def test_content_blind_oracle_predicts_the_training_mean_of_each_distortion_level():
    from training.synthetic_oracle import distortion_level_oracle

    train = [{"distortion": "jpeg", "level": "1", "mos": "80"}, {"distortion": "jpeg", "level": "1", "mos": "90"},
             {"distortion": "jpeg", "level": "2", "mos": "40"}, {"distortion": "none", "level": "0", "mos": "100"}]
    test = [{"distortion": "jpeg", "level": "2"}, {"distortion": "none", "level": "0"}, {"distortion": "jpeg", "level": "1"}]
    assert distortion_level_oracle(train, test).tolist() == [40.0, 100.0, 85.0]
    with pytest.raises(ValueError, match="blur"):
        distortion_level_oracle(train, [{"distortion": "blur", "level": "1"}])


@pytest.mark.slow
def test_an_interrupted_build_resumes_and_matches_an_uninterrupted_one(tmp_path, small_build, small_benchmark,
                                                                      monkeypatch):
    whole, _ = small_build
    real, calls = bs.build_photo, []

    def builds_two_photos_then_dies(pi, *a):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(pi)
        return real(pi, *a)

    monkeypatch.setattr(bs, "build_photo", builds_two_photos_then_dies)
    out = tmp_path / "synthetic"
    for seed in (1, 0):   # the seed-1 photos must not be reused by the seed-0 build
        calls.clear()
        with pytest.raises(KeyboardInterrupt):
            bs.build(out, size=224, seed=seed, test_fraction=0.25, workers=1)
        assert calls == [0, 1]
        assert not out.exists() and (tmp_path / "synthetic.partial").exists()   # nothing half-written in place
    calls.clear()
    monkeypatch.setattr(bs, "build_photo", lambda pi, *a: calls.append(pi) or real(pi, *a))
    bs.build(out, size=224, seed=0, test_fraction=0.25, workers=1)
    assert calls == [2, 3]   # photos 0 and 1 were not built again
    for name in ("train.csv", "test.csv", "SOURCES.md"):
        assert (out / name).read_bytes() == (whole / name).read_bytes(), name
    diff = filecmp.dircmp(out / "images", whole / "images")
    assert not diff.diff_files and not diff.left_only and not diff.right_only
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in whole.iterdir())
