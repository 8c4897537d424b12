"""What the serving host has: its GPUs (through nvidia-smi) and the TensorRT runtime library that
Triton's tensorrt_plan backend will load engines with.

nvidia-smi rather than a CUDA binding: the NVIDIA container runtime mounts it (with the driver)
into every GPU container, it needs no CUDA runtime of a matching version, and where it is absent
or finds no device the host is simply a CPU host.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/tensorrt/lib",
            "/opt/tritonserver/backends/tensorrt", "/usr/lib64", "/usr/lib")


class HostError(RuntimeError):
    """The host cannot serve the GPU target as it stands; the message says what to change."""


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: str
    driver: str


def gpus(smi: str = "nvidia-smi", timeout: float = 30.0) -> list[Gpu]:
    """Every GPU this process may use; [] when there is no nvidia-smi or it sees no device."""
    exe = shutil.which(smi)
    if exe is None:
        return []
    try:
        r = subprocess.run([exe, "--query-gpu=index,name,compute_cap,driver_version", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if r.returncode != 0:   # e.g. "No devices were found", or a driver/library mismatch
        return []
    found = []
    for line in r.stdout.splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) == 4 and fields[0].isdigit() and re.fullmatch(r"\d+\.\d+", fields[2]):
            found.append(Gpu(int(fields[0]), fields[1], fields[2], fields[3]))
    return found


def one_gpu_model(found: list[Gpu]) -> Gpu:
    """The GPU the engines are built for. Triton puts one instance on every visible GPU and an
    engine loads only on the model it was built for, so mixed models cannot share a repository."""
    models = sorted({(g.name, g.compute_capability) for g in found})
    if len(models) > 1:
        raise HostError(f"GPUs of different models are visible ({models}); give each container GPUs of one "
                        f"model (NVIDIA_VISIBLE_DEVICES / the pod's GPU request)")
    return found[0]


def tensorrt_runtime_version(lib_dirs=LIB_DIRS) -> str | None:
    """Version of the libnvinfer the serving backend links (e.g. '10.13.3'), from the real file
    behind libnvinfer.so.<major>; None when there is none."""
    for d in map(Path, lib_dirs):
        for lib in sorted(d.glob("libnvinfer.so.*")):
            m = re.fullmatch(r"libnvinfer\.so\.(\d+(?:\.\d+)*)", lib.resolve().name)
            if m and m.group(1).count(".") >= 2:
                return m.group(1)
    return None


def same_release(builder: str, runtime: str) -> bool:
    """An engine deserialises only in the TensorRT release that built it: compare major.minor.patch
    ('10.13.3.9' from the Python wheel against '10.13.3' from the library file name)."""
    return builder.split(".")[:3] == runtime.split(".")[:3]
