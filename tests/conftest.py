import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qfm_core import io_names
from training.data.registry import LIVEC_DEV_ROOT as LIVEC_DEV  # where ../shared is named, once
from training.checkpoint import BUNDLED

REPO = Path(__file__).resolve().parents[1]
BUNDLE = BUNDLED


def run_script(*args, timeout=900):
    """Run one of the project's commands as a user would (a subprocess in the repository root)."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def run_scripts(*commands, timeout=900) -> list:
    """run_script for several independent commands at once (their start-up, mostly imports, is
    the cost: running them side by side uses both cores)."""
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda c: run_script(*c, timeout=timeout), commands))


WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))   # `make test` runs two (pytest-xdist)


def shared_once(tmp_path_factory, name: str, make) -> Path:
    """A session artifact made once per test run, also when pytest-xdist runs several workers:
    the first worker makes it under a lock in the run's common temporary folder, the others wait
    and reuse it (each would otherwise pay the same minute of exports and banks). `make(folder)`
    fills the folder; a folder whose maker failed is made again by the next one that asks."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent                       # shared by every worker of this run
    out = root / f"shared_{name}"
    with FileLock(str(out) + ".lock"):
        if not (out / ".made").exists():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            make(out)
            (out / ".made").touch()
    return out


def _export(out: Path) -> None:
    r = run_script("export/to_onnx.py", "--checkpoint", BUNDLE, "--out", out)  # default parity set, as users get
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """FP32 and FP16 ONNX of the bundled student, written by export/to_onnx.py."""
    return shared_once(tmp_path_factory, "onnx", _export)


def write_image(path: Path, size=(40, 32), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import torch

    torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))


@pytest.fixture(scope="session")
def livec_dev():
    if not (LIVEC_DEV / "mos.csv").exists():
        pytest.skip(f"real LIVEC dev subset not found at {LIVEC_DEV}")
    return LIVEC_DEV


def bundle_with_grid(out: Path, grid: int) -> Path:
    """A copy of the bundled student whose crop plan has another grid: a new plan is written
    with the weights (as training/package_model.py --grid does), never passed to one tool."""
    import json
    import shutil

    shutil.copytree(BUNDLE, out)
    cfg = json.loads((out / "config.json").read_text())
    cfg["crop_plan"]["grid"] = grid
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    return out


def another_student(out: Path) -> Path:
    """A copy of the bundled student with its largest weight matrix scaled by 1.01: another
    student (other weights, other hash) with the same architecture and crop plan."""
    import shutil

    from safetensors.numpy import load_file, save_file

    shutil.copytree(BUNDLE, out)
    weights = load_file(str(out / "model.safetensors"))
    name = max((k for k in weights if weights[k].ndim == 2), key=lambda k: weights[k].size)
    weights[name] = (weights[name].astype(np.float32) * 1.01).astype(weights[name].dtype)
    save_file(weights, str(out / "model.safetensors"))
    return out


@pytest.fixture(scope="session")
def bundled_bank(tmp_path_factory, livec_dev) -> Path:
    """The bundled student's bank of 40 LIVEC dev photographs (export/build_bank.py)."""
    def make(out: Path) -> None:
        r = run_script("export/build_bank.py", "--checkpoint", BUNDLE, "--dataset", "livec", "--limit", "40",
                       "--out", out / "bank.safetensors")
        assert r.returncode == 0, r.stderr[-2000:]
    return shared_once(tmp_path_factory, "bundled_bank", make) / "bank.safetensors"


@pytest.fixture(scope="session")
def foreign_bank(tmp_path_factory, livec_dev) -> Path:
    """A bank built by another student (another_student) on four LIVEC photographs."""
    out = tmp_path_factory.mktemp("foreign")
    r = run_script("export/build_bank.py", "--checkpoint", another_student(out / "other"), "--dataset", "livec",
                   "--limit", "4", "--out", out / "bank.safetensors")
    assert r.returncode == 0, r.stderr[-2000:]
    return out / "bank.safetensors"


@pytest.fixture(scope="session")
def fast_repo(tmp_path_factory, exported, livec_dev):
    """cpu-pip Triton repository with one crop per image, so thousand-image jobs stay quick, and
    qfm_score sending chunks of 64 crops, so a few hundred images already take several BLS chunks.
    Tests that damage a repository copy it first."""
    def make(out: Path) -> None:
        from export import triton_repo

        student = bundle_with_grid(out / "student_grid1", 1)
        r = run_script("export/build_bank.py", "--checkpoint", student, "--dataset", "livec", "--limit", "12",
                       "--out", out / "bank.safetensors")
        assert r.returncode == 0, r.stderr[-2000:]
        triton_repo.write_repository("cpu-pip", student, out / "repo", out / "bank.safetensors",
                                     onnx=exported / "qfm_student_fp32.onnx", k=3)
        # ONNX Runtime's CPU arena off: it keeps the largest batch buffers it has met (measured +0.6
        # to +1 GB in the first minutes, depending on how batches form on a loaded machine) and would
        # hide or fake a leak in the load tests; without it, RSS growth is our code's.
        cfg = out / "repo" / io_names.STUDENT_MODEL / "config.pbtxt"
        cfg.write_text(cfg.read_text() + 'parameters { key: "cpu_mem_arena" value: { string_value: "false" } }\n')
        cfg = out / "repo" / io_names.SCORE_MODEL / "config.pbtxt"
        chunk = 'parameters { key: "chunk_crops" value: { string_value: "%d" } }\n'
        assert chunk % 512 in cfg.read_text()
        cfg.write_text(cfg.read_text().replace(chunk % 512, chunk % 64))

    return shared_once(tmp_path_factory, "fast_repo", make) / "repo"


@pytest.fixture(scope="session")
def fast_server(fast_repo):
    """One server on fast_repo for every test that only reads from it (client, load, hostile
    input): each server start costs ~15-30 s here. Tests that damage, kill or reconfigure a
    server start their own."""
    from serving.triton_server import TritonServer

    with TritonServer(fast_repo) as srv:
        yield srv


def infer_images(url: str, blobs: list[bytes], outputs=None, timeout: float = 120):
    """One raw tritonclient gRPC request of encoded images to the qfm_iqm ensemble (all outputs
    unless `outputs` names some)."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    inp = grpcclient.InferInput(io_names.IMAGE, [len(blobs)], "BYTES")
    inp.set_data_from_numpy(np.array(blobs, dtype=object))
    wanted = None if outputs is None else [grpcclient.InferRequestedOutput(o) for o in outputs]
    return client.infer(io_names.ENSEMBLE, [inp], outputs=wanted, client_timeout=timeout)
