"""benchmarks/gpu_check.sh on this CPU machine: --dry-run (every step's script parses its real
arguments and imports what it uses; the GPU tests are collected), and a real run, which must keep
going past failing steps, run what a CPU can (the NVRTC + ptxas step), and say why it skipped."""
import shutil
import subprocess

from conftest import REPO

STEPS = ["env", "compile", "gpu tests", "memcheck", "racecheck", "kernel bench", "student fp16", "training", "tensorrt",
         "entrypoint"]


def _run(*args, timeout=900):
    r = subprocess.run(["bash", "benchmarks/gpu_check.sh", *map(str, args)], cwd=REPO, capture_output=True,
                       text=True, timeout=timeout)
    rows = {}
    for line in (args[-1] / "summary.txt").read_text().splitlines()[3:-1]:   # title, header ... log
        name = next(s for s in sorted(STEPS, key=len, reverse=True) if line.startswith(s))
        rows[name] = line[15:85].strip()
    return r, rows


def test_dry_run_checks_every_step(tmp_path):
    r, rows = _run("--dry-run", tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert list(rows) == STEPS and set(rows.values()) == {"pass"}
    assert r.stdout.count("dry run: arguments parsed") == len(STEPS) - 1   # + the collected GPU tests
    assert "tests/gpu/test_kernels_gpu.py" in r.stdout


def test_real_run_without_a_gpu_goes_on_and_says_why(tmp_path):
    import torch
    if torch.cuda.is_available():
        import pytest
        pytest.skip("a GPU is present: run benchmarks/gpu_check.sh itself")
    r, rows = _run(tmp_path)
    assert r.returncode == 1, "steps that need a GPU must fail here"
    assert list(rows) == STEPS
    assert rows["compile"] == "pass"                      # NVRTC and ptxas need no GPU
    assert rows["env"] == rows["kernel bench"] == rows["training"] == "FAIL (exit 2)"   # "no CUDA GPU"
    assert rows["student fp16"].startswith("skipped: no CUDA GPU")
    assert rows["gpu tests"] == "skipped: no GPU test ran (no CUDA GPU visible)"
    assert rows["tensorrt"].startswith("skipped: no TensorRT")
    assert rows["entrypoint"].startswith("skipped: no TensorRT")
    if shutil.which("compute-sanitizer") is None:
        assert rows["memcheck"] == rows["racecheck"] == "skipped: compute-sanitizer not on PATH (CUDA toolkit)"
    assert (tmp_path / "gpu_check.log").stat().st_size > 0
