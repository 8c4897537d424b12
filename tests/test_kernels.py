"""CUDA kernels without a GPU: NVRTC compiles every variant, ptxas assembles it with no spills
within the register budget (these two need the CUDA toolkit's ptxas; the rest of this file does
not); the float64 reference is checked on its own; the TensorRT plugin's calling convention is read
back from the PTX; the PTX ISA NVRTC writes is checked against a driver's."""
import re
import shutil

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from export.kernels import compile as kc
from export.kernels import reference
from export.kernels.launch import partial_geometry
from conftest import run_script

needs_ptxas = pytest.mark.skipif(shutil.which("ptxas") is None, reason="ptxas (CUDA toolkit) not on PATH")


@needs_ptxas
def test_every_variant_compiles_without_spills_within_budget():
    archs = [a for a in kc.ARCHS if a in kc.supported_archs()]
    assert {"sm_80", "sm_86", "sm_89", "sm_90"} <= set(archs), f"NVRTC supports only {archs}"
    seen = 0
    for arch in archs:
        for tactic in kc.TILES:
            for metric in kc.METRICS:
                usage = kc.resource_usage(kc.compile_ptx(arch, tactic, metric), arch)
                assert sorted(r.kernel for r in usage) == sorted(kc.KERNELS)
                for r in usage:
                    where = f"{r.kernel} {arch} tactic {tactic} {metric}"
                    assert r.spill_stores == 0 and r.spill_loads == 0, f"{where} spills"
                    assert r.stack_bytes == 0, f"{where} uses a stack frame (local memory)"
                    assert r.registers <= kc.REGISTER_BUDGET, f"{where}: {r.registers} registers"
                    assert r.shared_bytes <= 48 * 1024, f"{where}: {r.shared_bytes} B static shared memory"
                    seen += 1
    assert seen == len(archs) * len(kc.TILES) * len(kc.METRICS) * len(kc.KERNELS)


def test_ptx_parameters_follow_the_aot_plugin_convention():
    """TensorRT passes inputs, then the int32 scalars, then outputs; the PTX must take exactly that."""
    ptx = kc.compile_ptx("sm_90", 2, "sq_l2").decode()
    entry = re.search(r"\.entry qfm_topk_partial\((.*?)\)", ptx, re.S).group(1)
    kinds = re.findall(r"\.param \.(\w+)", entry)
    assert kinds == ["u64", "u64"] + ["u32"] * 5 + ["u64", "u64"]
    geo = partial_geometry(n=300, m=1_000_003, d=384, k=32, splits=264, tactic=3)
    assert geo["grid"] == (264, 3) and geo["block"] == 256
    n, m, d, k, chunk = geo["scalars"]
    assert (n, m, d, k) == (300, 1_000_003, 384, 32) and chunk * 264 >= m > chunk * 263


def test_ptx_isa_newer_than_the_driver_is_refused_in_one_line():
    ptx = kc.compile_ptx("sm_90", 2, "sq_l2")
    info = kc.ptx_compatibility(ptx, None)     # no driver here: recorded, not judged
    assert info["nvrtc"] == kc.nvrtc_version() and info["driver_cuda"] is None
    isa_major = int(info["ptx_isa"].split(".")[0])
    needs = info["ptx_needs_driver_cuda"]
    major, minor = map(int, needs.split("."))
    assert kc.ptx_compatibility(ptx, major * 1000 + minor * 10)["driver_cuda"] == needs
    older = (major - 1) * 1000 + 80 if minor == 0 else major * 1000 + (minor - 1) * 10
    with pytest.raises(kc.KernelBuildError, match=rf"PTX ISA {info['ptx_isa']}.*needs a driver for CUDA >= {needs}"):
        kc.ptx_compatibility(ptx, older)
    assert isa_major >= 7


def test_compile_errors_are_reported():
    with pytest.raises(ValueError):
        kc.compile_ptx("sm_90", 7)
    with pytest.raises(ValueError):
        kc.compile_ptx("sm_90", 2, "manhattan")


@pytest.mark.parametrize("metric,scipy_name", [("sq_l2", "sqeuclidean"), ("cosine", "cosine")])
def test_reference_distances_match_scipy(metric, scipy_name):
    rng = np.random.default_rng(0)
    q, b = rng.normal(size=(7, 40)), rng.normal(size=(33, 40))
    np.testing.assert_allclose(reference.distances(q, b, metric), cdist(q, b, scipy_name), rtol=1e-10, atol=1e-10)


def test_reference_topk_orders_ties_by_index_and_padding_changes_nothing():
    rng = np.random.default_rng(1)
    b = rng.normal(size=(20, 12)).astype(np.float16)
    b[[3, 9, 15]] = b[7]                       # four identical bank rows
    q = b[[7]].copy()
    d, i = reference.topk(q, b, k=5)
    assert list(i[0, :4]) == [3, 7, 9, 15] and np.all(d[0, :4] == 0)
    assert d[0, 4] > 0
    for metric in reference.METRICS:
        np.testing.assert_allclose(reference.distances(reference.pad_dim(q), reference.pad_dim(b), metric),
                                   reference.distances(q, b, metric), atol=1e-12)
    assert reference.pad_dim(np.ones((2, 13))).shape == (2, 16)
    with pytest.raises(ValueError):
        reference.topk(q, b, k=21)


def test_match_engine_builder_says_what_is_missing(tmp_path):
    from qfm_core.bank import save_synthetic_bank
    bank = tmp_path / "bank.safetensors"
    save_synthetic_bank(bank, np.zeros((10, 384), np.float32), np.zeros(10, np.float32))
    out = run_script("export/build_match_engine.py", "--bank", bank, "--engine", tmp_path / "m.plan")
    assert out.returncode == 2
    assert "no CUDA GPU" in out.stderr or "tensorrt" in out.stderr.lower()
    assert not (tmp_path / "m.plan").exists()


def test_gpu_repository_can_serve_the_match_engine():
    from export.triton_repo import match_config
    from qfm_core import io_names
    text = match_config("gpu-ngc", 384, 5, match_plan=True)
    assert 'platform: "tensorrt_plan"' in text and "KIND_GPU" in text
    for name in (io_names.MATCH_QUERY, io_names.NEIGHBOR_IDS, io_names.NEIGHBOR_SCORES, io_names.NEIGHBOR_DISTANCES):
        assert f'name: "{name}"' in text
    assert match_config("gpu-ngc", 384, 5) != text   # default stays the ONNX match model


def test_kernel_bench_refuses_to_invent_figures_without_a_gpu(tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: benchmarks/gpu_check.sh runs the real benchmark")
    out = run_script("benchmarks/kernel_bench.py", "--out", tmp_path / "k.json")
    assert out.returncode == 2 and "no CUDA GPU" in out.stderr
    assert not (tmp_path / "k.json").exists()


def test_without_ptxas_only_the_ptxas_test_is_skipped(tmp_path):
    """A CI machine without the CUDA toolkit still runs the NVRTC, reference and convention tests."""
    import os
    import subprocess
    import sys
    from conftest import REPO
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bin_dir)}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kernels.py",
                        "-k", "every_variant or reference_distances or convention"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    assert "3 passed, 1 skipped" in r.stdout, r.stdout[-1000:]
