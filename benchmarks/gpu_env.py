"""What a GPU host offers the GPU path, checked before anything runs on it (gpu_check.sh step 1):
GPU, compute capability, driver, the CUDA version the driver supports, NVRTC and the PTX ISA it
writes (the driver must load it), PyTorch, TensorRT (>= 10.9 for our AOT plugins), compute-sanitizer.

    python benchmarks/gpu_env.py [--out build/gpu_check/env.json]

Exits 1 when the driver cannot load the PTX our NVRTC writes (every kernel step would fail), 2
without a GPU.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from benchmarks.common import dry_run, write_json
from training.cli import HelpFormatter


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("build/gpu_check/env.json"))
    args = ap.parse_args(argv)
    if dry_run(args, ("torch", "export.kernels.compile")):
        return 0
    import torch

    from export.kernels.compile import (
        KernelBuildError,
        compile_ptx,
        driver_cuda_version,
        ptx_compatibility,
    )

    if not torch.cuda.is_available():
        print("gpu_env: no CUDA GPU visible", file=sys.stderr)
        return 2
    props = torch.cuda.get_device_properties(0)
    arch = f"sm_{props.major}{props.minor}"
    env = {"gpu": props.name, "compute_capability": f"{props.major}.{props.minor}", "sms": props.multi_processor_count,
           "memory_gib": round(props.total_memory / 2**30, 1), "gpus": torch.cuda.device_count(),
           "torch": torch.__version__, "torch_cuda": torch.version.cuda,
           "compute_sanitizer": shutil.which("compute-sanitizer"), "ptxas": shutil.which("ptxas")}
    try:
        import tensorrt as trt
        env["tensorrt"] = trt.__version__
    except ImportError:
        env["tensorrt"] = None
    status = 0
    try:
        env.update(ptx_compatibility(compile_ptx(arch), driver_cuda_version()))
        env["ptx_loadable"] = True
    except KernelBuildError as e:
        env["ptx_loadable"], status = str(e), 1
    for k, v in env.items():
        print(f"{k:22s} {v}")
    write_json(env, args.out)
    return status


if __name__ == "__main__":
    sys.exit(main())
