"""Distillation pipeline end to end on a tiny data set: a teacher is trained, labels the pool,
the student trains on both (plus a replayed labelled set), and the report holds both evaluations;
a rerun resumes instead of retraining; --all trains the bundle's teacher and student on everything."""
import json

import pytest
import yaml

from conftest import run_script, write_image

pytestmark = pytest.mark.slow


def test_teacher_labels_pool_and_student_trains(tmp_path):
    data, pool = tmp_path / "data", tmp_path / "pool"
    rows, pool_rows = ["image,mos"], ["image,mos"]
    for i in range(20):
        write_image(data / f"im{i:02d}.png", size=(240, 240), seed=i)
        rows.append(f"im{i:02d}.png,{1 + i * 0.2:.1f}")
    for i in range(6):
        write_image(pool / f"p{i}.png", size=(240, 240), seed=100 + i)
        pool_rows.append(f"p{i}.png,0")          # labels ignored: the teacher's replace them
    (data / "mos.csv").write_text("\n".join(rows) + "\n")
    (pool / "mos.csv").write_text("\n".join(pool_rows) + "\n")
    (pool / "replay.csv").write_text("image,mos\n" + "".join(f"p{i}.png,{10 * i}\n" for i in range(6)))
    train = {"epochs": 1, "batch_size": 4, "warmup_steps": 1, "eval_every": 1, "threads": 1}
    spec = {"teacher": {"student": {"name": "qfm_lite1"}, "data": {"val": None, "eval_grid": 1}, "train": train,
                        "qfm": {"enabled": False}},
            "student": {"student": {"name": "qfm_lite0"}, "data": {"val": None, "eval_grid": 1}, "train": train,
                        "qfm": {"enabled": False}},
            "pool": {"dataset": str(pool / "mos.csv"), "size": 6, "grid": 1, "samples_per_epoch": 4},
            "replay": {"dataset": str(pool / "replay.csv"), "samples_per_epoch": 4}}
    cfg = tmp_path / "distill.yaml"
    cfg.write_text(yaml.safe_dump(spec))
    r = run_script("training/distill.py", "--config", cfg, "--dataset", data / "mos.csv", "--repeats", "1",
                   "--out", tmp_path / "run")
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "distill.json").read_text())
    run = report["runs"][0]
    assert run["pool"] == 6 and run["n_test"] == 4
    for role in ("teacher", "student"):
        assert -1.0 <= run[role]["srcc"] <= 1.0 and run[role]["rmse"] >= 0
    labels = (tmp_path / "run" / "seed_0" / "pool.csv").read_text().splitlines()[1:]
    scores = [float(line.split(",")[1]) for line in labels]
    assert len(scores) == 6 and all(0.0 <= s <= 100.0 for s in scores) and len(set(scores)) > 1
    assert (tmp_path / "run" / "seed_0" / "student" / "checkpoint" / "model.safetensors").exists()

    assert "decode replay (6)" in r.stderr          # the replayed set is one of the student's sources
    # A rerun resumes: finished teacher and student are not retrained, the cached labels are reused.
    again = run_script("training/distill.py", "--config", cfg, "--dataset", data / "mos.csv", "--repeats", "1",
                       "--out", tmp_path / "run")
    assert again.returncode == 0 and "reusing teacher labels" in again.stdout, again.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "distill.json").read_text())["runs"] == report["runs"]
    # --all: the bundle's teacher and student on every image, ready for package_model.py.
    whole = run_script("training/distill.py", "--config", cfg, "--dataset", data / "mos.csv", "--all",
                       "--out", tmp_path / "bundle")
    assert whole.returncode == 0, whole.stderr[-3000:]
    student = tmp_path / "bundle" / "all" / "student"
    assert (student / "checkpoint" / "model.safetensors").exists() and (student / "config.yaml").exists()
