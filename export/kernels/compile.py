"""NVRTC build of pairwise_topk.cu to PTX, and ptxas resource checks.

NVRTC (cuda-python's `cuda.bindings.nvrtc`) needs no GPU, so every variant is compiled in CI:
three tile configurations x two metrics x every architecture below. `ptxas` from the CUDA
toolkit turns the PTX into SASS and reports registers and spills; `resource_usage` parses that.

Register budget: 128 per thread. The kernels run 256 threads per block and ask for 2 resident
blocks per SM (`__launch_bounds__(256, 2)`): 65536 registers / 512 threads = 128. Two blocks
let one block's shared-memory staging overlap the other's tensor-core work; more registers would
halve occupancy, fewer would force the accumulator fragments and top-k lists out of registers.

    python -m export.kernels.compile            # compile all variants, print the ptxas table
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

SOURCE = Path(__file__).with_name("pairwise_topk.cu")
KERNELS = ("qfm_pairwise_dist", "qfm_topk_partial", "qfm_topk_merge")
METRICS = {"sq_l2": 0, "cosine": 1}
# Tile configurations (query rows per block, bank rows per tile), tuned per query count:
# few queries waste most of a 64-row MMA tile, many queries re-read the bank less with tall tiles.
TILES = {1: (16, 128), 2: (64, 64), 3: (128, 64)}   # keys are the TensorRT plugin's tactic ids
ARCHS = ("sm_80", "sm_86", "sm_89", "sm_90", "sm_100", "sm_120")   # WMMA fp16 needs sm_70+
REGISTER_BUDGET = 128
K_MAX = 32


class KernelBuildError(RuntimeError):
    pass


def include_dirs() -> list[str]:
    """A CUDA include folder with cuda_fp16.h and crt/mma.h: CUDA_HOME, /usr/local/cuda, or the
    copy of the headers that the `triton` wheel (a torch dependency) ships."""
    candidates = [os.environ.get("CUDA_HOME"), "/usr/local/cuda"]
    candidates = [str(Path(c) / "include") for c in candidates if c]
    try:
        import importlib.util
        spec = importlib.util.find_spec("triton")
        if spec and spec.origin:
            candidates.append(str(Path(spec.origin).parent / "backends" / "nvidia" / "include"))
    except (ImportError, ValueError):
        pass
    for d in candidates:
        if (Path(d) / "cuda_fp16.h").exists() and (Path(d) / "crt" / "mma.h").exists():
            return [d]
    raise KernelBuildError("CUDA headers (cuda_fp16.h, crt/mma.h) not found: install the CUDA toolkit "
                           "or set CUDA_HOME")


def _check(result, prog=None):
    from cuda.bindings import nvrtc
    err = result[0]
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        log = ""
        if prog is not None:
            _, size = nvrtc.nvrtcGetProgramLogSize(prog)
            buf = b" " * size
            nvrtc.nvrtcGetProgramLog(prog, buf)
            log = buf.decode(errors="replace")
        raise KernelBuildError(f"NVRTC: {err.name}\n{log}")
    return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)


def supported_archs() -> list[str]:
    from cuda.bindings import nvrtc
    return [f"sm_{a}" for a in _check(nvrtc.nvrtcGetSupportedArchs())]


@functools.lru_cache(maxsize=None)
def compile_ptx(arch: str, tactic: int = 2, metric: str = "sq_l2") -> bytes:
    """PTX of all three kernels for one (architecture, tile configuration, metric)."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as e:
        raise KernelBuildError(f"cuda-python is not installed ({e}): pip install cuda-bindings") from e
    if tactic not in TILES:
        raise ValueError(f"tactic must be one of {sorted(TILES)}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {sorted(METRICS)}")
    qt, mt = TILES[tactic]
    prog = _check(nvrtc.nvrtcCreateProgram(SOURCE.read_bytes(), SOURCE.name.encode(), 0, [], []))
    opts = [f"--gpu-architecture=compute_{arch.removeprefix('sm_')}", "--std=c++17", "-default-device",
            "--use_fast_math", f"-DQFM_QT={qt}", f"-DQFM_MT={mt}", f"-DQFM_METRIC={METRICS[metric]}"]
    opts += [f"-I{d}" for d in include_dirs()]
    try:
        _check(nvrtc.nvrtcCompileProgram(prog, len(opts), [o.encode() for o in opts]), prog)
        size = _check(nvrtc.nvrtcGetPTXSize(prog))
        buf = b" " * size
        _check(nvrtc.nvrtcGetPTX(prog, buf))
    finally:
        nvrtc.nvrtcDestroyProgram(prog)
    return buf.rstrip(b"\x00 ") + b"\n"


def nvrtc_version() -> str:
    """The NVRTC doing the compiling, e.g. "13.0": it decides the PTX ISA version written."""
    from cuda.bindings import nvrtc
    major, minor = _check(nvrtc.nvrtcVersion())
    return f"{major}.{minor}"


def _cuda_str(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"   # 12080 -> "12.8" (cuDriverGetVersion's encoding)


def driver_cuda_version() -> int | None:
    """The CUDA version the installed driver supports (cuDriverGetVersion, e.g. 12080), or None
    when there is no driver (CPU machines: the driver library cannot even be found)."""
    try:
        from cuda.bindings import driver
        err, version = driver.cuDriverGetVersion()
    except Exception:   # cuda-python raises its own DynamicLibNotFoundError without a driver
        return None
    return int(version) if err == driver.CUresult.CUDA_SUCCESS else None


def ptx_compatibility(ptx: bytes, driver_version: int | None) -> dict:
    """What loading this PTX needs, against what the driver has.

    The driver JIT-compiles PTX when a module is loaded (our launcher, and TensorRT when it builds
    or deserialises an engine carrying the AOT plugin), and refuses a PTX ISA newer than itself
    with CUDA_ERROR_UNSUPPORTED_PTX_VERSION. NVRTC writes its own toolkit's ISA (NVRTC 13.0:
    9.0), so a cuda-python/NVRTC newer than the driver breaks at load time, far from the cause.
    Raises KernelBuildError (one line) when the driver is known and too old."""
    from cuda.bindings import utils
    isa = utils.get_ptx_ver(ptx.decode(errors="replace"))
    needs = utils.get_minimal_required_cuda_ver_from_ptx_ver(isa)
    info = {"nvrtc": nvrtc_version(), "ptx_isa": isa, "ptx_needs_driver_cuda": _cuda_str(needs),
            "driver_cuda": _cuda_str(driver_version) if driver_version else None}
    if driver_version is not None and driver_version < needs:
        raise KernelBuildError(
            f"NVRTC {info['nvrtc']} writes PTX ISA {isa}, which needs a driver for CUDA >= {_cuda_str(needs)}, but "
            f"this driver supports CUDA {info['driver_cuda']}: upgrade the driver, or install an NVRTC no newer than "
            f"the driver (e.g. pip install 'cuda-bindings=={_cuda_str(driver_version)}.*' "
            f"'nvidia-cuda-nvrtc-cu{driver_version // 1000}=={_cuda_str(driver_version)}.*')")
    return info


@dataclass
class Resources:
    kernel: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_bytes: int
    shared_bytes: int


_FUNC = re.compile(r"Compiling entry function '(\w+)'")
_USED = re.compile(r"Used (\d+) registers.*?(?:(\d+) bytes smem)?")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def resource_usage(ptx: bytes, arch: str) -> list[Resources]:
    """Assemble PTX with ptxas -v and parse registers / spills / shared memory per kernel."""
    ptxas = shutil.which("ptxas")
    if ptxas is None:
        raise KernelBuildError("ptxas not on PATH (it ships with the CUDA toolkit)")
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_bytes(ptx)
        run = subprocess.run([ptxas, f"-arch={arch}", "-v", "-o", str(Path(tmp) / "k.cubin"), str(src)],
                             capture_output=True, text=True)
    if run.returncode != 0:
        raise KernelBuildError(f"ptxas failed for {arch}:\n{run.stderr}")
    out, current, stack = [], None, None
    for line in run.stderr.splitlines():
        if m := _FUNC.search(line):
            current = m.group(1)
        elif m := _SPILL.search(line):
            stack = tuple(int(x) for x in m.groups())
        elif (m := re.search(r"Used (\d+) registers", line)) and current:
            smem = re.search(r"(\d+) bytes smem", line)
            out.append(Resources(current, int(m.group(1)), stack[1], stack[2], stack[0],
                                 int(smem.group(1)) if smem else 0))
            current = None
    return out


def main(argv=None) -> int:
    import argparse

    from training.cli import HelpFormatter
    ap = argparse.ArgumentParser(description="Compile every kernel variant with NVRTC and print ptxas's resource table.", formatter_class=HelpFormatter)
    ap.add_argument("--arch", action="append", help="only this target (repeatable); default: every supported one")
    args = ap.parse_args(argv)
    if os.environ.get("QFM_DRY_RUN") == "1":   # benchmarks/gpu_check.sh --dry-run
        print(f"dry run: arguments parsed: {vars(args)}")
        return 0
    archs = [a for a in (args.arch or ARCHS) if a in supported_archs()]
    print(f"{'arch':7} {'tiles':9} {'metric':7} {'kernel':18} {'regs':>4} {'spill st/ld':>11} {'stack':>5} {'smem':>6}")
    bad = 0
    for arch in archs:
        for tactic, (qt, mt) in TILES.items():
            for metric in METRICS:
                for r in resource_usage(compile_ptx(arch, tactic, metric), arch):
                    flag = "" if r.registers <= REGISTER_BUDGET and r.spill_stores == r.spill_loads == 0 else "  <-- over budget"
                    bad += bool(flag)
                    print(f"{arch:7} {qt:>3}x{mt:<5} {metric:7} {r.kernel:18} {r.registers:4d} "
                          f"{r.spill_stores:5d}/{r.spill_loads:<5d} {r.stack_bytes:5d} {r.shared_bytes:6d}{flag}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
