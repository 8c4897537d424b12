"""Multi-process training through torchrun + DistributedDataParallel, on CPU with gloo.

Two processes with a global batch of 8 (4 each) must make the same updates as one process with
8, when nothing couples the samples of a batch (no PLCC loss, BatchNorm frozen, no dropout): the
final weights agree to float rounding. A second run with QFM on checks that the memory bank is
shared (every process pushes the global batch).
"""
import subprocess
import sys

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from conftest import REPO, write_image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_csv(tmp_path_factory):
    d = tmp_path_factory.mktemp("ddp_data")
    rows = ["image,mos"]
    for i in range(16):
        write_image(d / f"im{i:02d}.png", size=(240, 240), seed=i)
        rows.append(f"im{i:02d}.png,{10 + 5 * i}")
    (d / "mos.csv").write_text("\n".join(rows) + "\n")
    return d / "mos.csv"


def _config(path, csv, qfm: bool):
    cfg = {"seed": 3, "student": {"name": "qfm_lite0", "frozen_stages": 99, "dropout": 0.0},
           "data": {"train": [{"dataset": str(csv)}], "val": None, "eval_grid": 1},
           "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "eval_every": 1, "threads": 1},
           "qfm": {"enabled": qfm, "memory_size": 64, "min_memory": 8},
           "loss": {"w_plcc": 0.0}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _train(cfg, out, procs: int):
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"] \
        if procs > 1 else [sys.executable]
    r = subprocess.run([*launcher, "training/train.py", "--config", str(cfg), "--out", str(out)], cwd=REPO,
                       capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1", **_env()})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return r


def _env():
    import os
    return {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}


def test_two_processes_make_the_same_update_as_one(tmp_path, tiny_csv):
    cfg = _config(tmp_path / "c.yaml", tiny_csv, qfm=False)
    _train(cfg, tmp_path / "one", 1)
    _train(cfg, tmp_path / "two", 2)
    a = load_file(str(tmp_path / "one" / "checkpoint" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoint" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k].astype(np.float64), b[k].astype(np.float64), atol=2e-5, rtol=1e-4, err_msg=k)
    # and training really moved the weights (equal because both learned, not because neither did)
    import torch
    from training.config import load_config
    from training.trainer import build_student
    torch.manual_seed(3)
    initial = build_student(load_config(cfg)).state_dict()
    assert np.abs(a["token_proj.weight"] - initial["token_proj.weight"].numpy()).max() > 1e-4
    assert (tmp_path / "two" / "command.txt").read_text().startswith("torchrun x2")
    assert (tmp_path / "two" / "curve.png").exists() and (tmp_path / "two" / "metrics.json").exists()


def test_qfm_memory_is_shared_across_processes(tmp_path, tiny_csv):
    cfg = _config(tmp_path / "c.yaml", tiny_csv, qfm=True)
    _train(cfg, tmp_path / "two", 2)
    memory = load_file(str(tmp_path / "two" / "state" / "memory.safetensors"))
    head, size = memory["position"].tolist()
    assert size == 16, "each process must push the whole global batch (2 steps x 8)"
    # one entry per image: the 8 of each process's own batches plus the 8 gathered from the other
    assert len(set(np.round(memory["scores"][:16], 3).tolist())) == 16


def test_bank_items_absolute_across_processes(tmp_path, tiny_csv):
    """qfm.bank_items 'absolute' under DDP: every process gathers the global batch's membership
    with it, so only the absolute-label images of the epoch reach the shared memory."""
    grouped = tmp_path / "grouped.csv"
    rows = ["image,mos,ref_id"] + [f"{tiny_csv.parent}/im{i:02d}.png,{10 + 5 * i},ref{i // 4}" for i in range(16)]
    grouped.write_text("\n".join(rows) + "\n")
    cfg_path = _config(tmp_path / "c.yaml", tiny_csv, qfm=True)
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["data"]["train"].append({"dataset": str(grouped), "labels": "within_reference", "group_size": 4})
    cfg["qfm"]["bank_items"] = "absolute"
    cfg_path.write_text(yaml.safe_dump(cfg))
    _train(cfg_path, tmp_path / "two", 2)
    memory = load_file(str(tmp_path / "two" / "state" / "memory.safetensors"))
    head, size = memory["position"].tolist()
    assert size == 16, "32 images in the epoch, of which the 16 absolute-label ones enter the memory"
