"""The user-facing commands, run as a user runs them (subprocess, real files)."""
import json

import pytest

from conftest import BUNDLE, bundle_with_grid, run_script as _run, run_scripts


def test_help_texts():
    scripts = ("training/train.py", "training/evaluate.py", "training/protocol.py",
               "training/data/build_synthetic.py", "training/package_model.py", "training/compare_models.py")
    for script, r in zip(scripts, run_scripts(*[(s, "--help") for s in scripts], timeout=120)):
        assert r.returncode == 0 and "usage:" in r.stdout, script


def test_evaluate_reports_clear_errors(tmp_path):
    no_ckpt, no_set = run_scripts(("training/evaluate.py", "--checkpoint", tmp_path, "--dataset", "livec"),
                                  ("training/evaluate.py", "--checkpoint", BUNDLE, "--dataset", "no_such_set"),
                                  timeout=120)
    assert no_ckpt.returncode == 2 and "not a student checkpoint" in no_ckpt.stderr
    assert no_set.returncode == 2 and "unknown data set" in no_set.stderr


def test_bundle_is_small_and_complete():
    files = {p.name: p.stat().st_size for p in BUNDLE.iterdir()}
    assert {"model.safetensors", "config.json", "metrics.json"} <= set(files)
    assert files["model.safetensors"] < 25 * 2**20
    metrics = json.loads((BUNDLE / "metrics.json").read_text())
    assert metrics["synthetic_test"]["n"] > 100


def test_evaluate_on_a_generic_csv(tmp_path, livec_dev):
    """--dataset accepts any CSV in the generic form (here 24 real LIVEC photographs).
    The bundled model trained on these images, so only the mechanics are checked here."""
    rows = (livec_dev / "mos.csv").read_text().splitlines()
    csv = tmp_path / "subset.csv"
    csv.write_text("\n".join([rows[0]] + [f"{livec_dev}/{r}" for r in rows[1:25]]) + "\n")
    student = bundle_with_grid(tmp_path / "grid1", 1)   # the crop plan is the checkpoint's
    r = _run("training/evaluate.py", "--checkpoint", student, "--dataset", csv, "--predictions", tmp_path / "pred.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["n"] == 24 and {"srcc", "plcc", "plcc_logistic", "krcc", "rmse"} <= set(out)
    assert -1 <= out["srcc"] <= 1 and out["crop_plan"]["grid"] == 1
    assert len((tmp_path / "pred.csv").read_text().splitlines()) == 25


def test_compare_models_on_a_generic_csv(tmp_path, livec_dev):
    """A model compared with itself: identical metrics, a difference of exactly 0 inside its
    interval; a missing checkpoint is a clear error."""
    rows = (livec_dev / "mos.csv").read_text().splitlines()
    csv = tmp_path / "subset.csv"
    csv.write_text("\n".join([rows[0]] + [f"{livec_dev}/{r}" for r in rows[1:13]]) + "\n")
    student = bundle_with_grid(tmp_path / "grid1", 1)
    r = _run("training/compare_models.py", "--a", student, "--b", student, "--dataset", csv,
             "--resamples", "200", "--plot", tmp_path / "compare.png")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    out = json.loads(r.stdout)
    assert out["metrics_a"] == out["metrics_b"] and out["metrics_a"]["n"] == 12
    for m in ("srcc", "plcc"):
        d = out["difference_a_minus_b"][m]
        assert d["difference"] == 0 and d["interval_contains_zero"] and d["a"] == out["metrics_a"][m]
    r = _run("training/compare_models.py", "--a", tmp_path, "--b", BUNDLE, "--dataset", csv, timeout=120)
    assert r.returncode == 2 and "not a student checkpoint" in r.stderr


# Measured for the bundled model on the held-out synthetic photographs (models/qfm_iqm/metrics.json).
# Issue #2 asks for SRCC and PLCC >= 0.90 there; that target is NOT met (README, "Results"), so this
# test guards the measured level against regressions instead of pretending to check the target.
# (one centre crop: 0.699 / 0.773). Within one reference the bundle orders the degradations far
# better (median 0.825, worst photograph 0.714), and that is what a model that forgot distortions
# loses first (0.47 for the no-replay distilled student, README).
SYNTHETIC_FLOOR, WITHIN_REFERENCE_FLOOR = 0.65, 0.75


@pytest.mark.heldout
def test_bundled_model_on_held_out_synthetic_photographs(tmp_path):
    """Recomputed from scratch: regenerate the held-out synthetic photographs (deterministic;
    identical to a full build's test split) and evaluate the bundle on them, one centre crop per
    image (package_model.py records that figure beside the 3x3 one; 1/9 of the compute)."""
    out = tmp_path / "synthetic"
    r = _run("training/data/build_synthetic.py", "--only-split", "test", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    r = _run("training/evaluate.py", "--checkpoint", bundle_with_grid(tmp_path / "grid1", 1), "--dataset", "synthetic",
             "--root", out)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert result["n"] == 760
    shipped = json.loads((BUNDLE / "metrics.json").read_text())["synthetic_test_grid1"]
    assert result["srcc"] == pytest.approx(shipped["srcc"], abs=1e-3)  # metrics.json is what this computes
    assert result["srcc"] >= SYNTHETIC_FLOOR and result["plcc"] >= SYNTHETIC_FLOOR, result
    within = result["srcc_within_reference"]
    assert within["groups"] == 5 and within["median"] >= WITHIN_REFERENCE_FLOOR, within


def test_package_provenance_says_when_the_tree_was_dirty(tmp_path, monkeypatch):
    """metrics.json names the commit a package was made at, and whether tracked files differed
    from it (the bundle of 2026-11-25 was packaged before its configs were committed)."""
    import subprocess

    from training.package_model import _git_provenance

    monkeypatch.chdir(tmp_path)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(git + ["init", "-q"], check=True)
    (tmp_path / "bundled.yaml").write_text("lr: 2.0e-4\n")
    subprocess.run(git + ["add", "bundled.yaml"], check=True)
    subprocess.run(git + ["commit", "-q", "-m", "c"], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "untracked.txt").write_text("not part of the recipe\n")
    assert _git_provenance() == {"git_commit": head, "git_dirty": False}
    (tmp_path / "bundled.yaml").write_text("lr: 3.0e-4\n")
    assert _git_provenance() == {"git_commit": head, "git_dirty": True}
    monkeypatch.chdir(tmp_path.parent)   # not a repository: said, not guessed
    if subprocess.run(["git", "rev-parse"], capture_output=True).returncode != 0:
        assert _git_provenance() == {"git_commit": "unknown", "git_dirty": None}
