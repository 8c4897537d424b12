r"""Container entrypoint: choose the target for this host, build or reuse its engines, write the
model repository and exec tritonserver.

    python3 -m serving.entrypoint                                  (the image's ENTRYPOINT)
    python3 -m serving.entrypoint --cpu-target cpu-pip --server path/to/tritonserver -- --log-verbose 1

On a GPU host (nvidia-smi sees a device): the FP16 student engine (export/build_engine.py) and the
match engine with our kernel (export/build_match_engine.py) are built for that GPU once and kept
in the engine cache volume, keyed by GPU name, compute capability, TensorRT version and the
ONNX / bank hashes (serving/engine_cache.py); a second start reuses them, a changed key builds
new ones. Then the gpu-ngc repository. Without a GPU: the --cpu-target repository (cpu-ngc,
ONNX Runtime backend, in NVIDIA's image). Then `exec tritonserver`, so the server is the
container's main process and gets its signals (SIGTERM on `docker stop` / pod deletion).

Every option also reads an environment variable (shown in --help), which is how compose files and
Kubernetes manifests set them. Exit codes: 2 bad artifacts or settings, 3 the host cannot serve
the GPU target as it stands, 4 an engine build failed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from export import triton_repo
from qfm_core import io_names
from qfm_core.files import atomic_dir, sha256_file, write_json
from qfm_core.image_guard import RequestLimits
from serving import engine_cache, host_probe
from serving.image_artifacts import BANK, CHECKPOINT, ONNX_FP16, ONNX_FP32
from training.cli import HelpFormatter

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_ENGINE = REPO_ROOT / "export" / "build_engine.py"
BUILD_MATCH_ENGINE = REPO_ROOT / "export" / "build_match_engine.py"
# Everything the match engine's kernel is made of: a change to any of them is a new engine.
KERNEL_SOURCES = [REPO_ROOT / "export" / "kernels" / n for n in ("pairwise_topk.cu", "compile.py", "launch.py")] + \
                 [REPO_ROOT / "export" / "match_plugin.py"]

MATCHERS = ("auto", "kernel", "onnx")


class EntrypointError(RuntimeError):
    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def log(msg: str) -> None:
    print(f"[qfm-entrypoint {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _env(name: str, default):
    return os.environ.get(name, default)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--artifacts", type=Path, default=_env("QFM_ARTIFACTS", "/opt/qfm/artifacts"),
                    help=f"folder with {CHECKPOINT}/, {ONNX_FP32}, {ONNX_FP16}, {BANK} (env QFM_ARTIFACTS)")
    ap.add_argument("--engine-cache", type=Path, default=_env("QFM_ENGINE_CACHE", "/var/cache/qfm-engines"),
                    help="engine cache volume, shared by restarts and replicas (env QFM_ENGINE_CACHE)")
    ap.add_argument("--repo", type=Path, default=_env("QFM_REPO", "/tmp/qfm_repo"),
                    help="where the model repository is written, replaced at every start (env QFM_REPO)")
    ap.add_argument("--target", choices=("auto",) + triton_repo.TARGETS, default=_env("QFM_TARGET", "auto"),
                    help="auto: gpu-ngc when nvidia-smi sees a GPU, else --cpu-target (env QFM_TARGET)")
    ap.add_argument("--cpu-target", choices=("cpu-ngc", "cpu-pip"), default=_env("QFM_CPU_TARGET", "cpu-ngc"),
                    help="target without a GPU: cpu-ngc in NVIDIA's image, cpu-pip with the pip-installed "
                         "server (env QFM_CPU_TARGET)")
    ap.add_argument("--matcher", choices=MATCHERS, default=_env("QFM_MATCHER", "auto"),
                    help="gpu-ngc neighbour search: kernel (our match engine; a failed build stops the start), "
                         "onnx (ONNX match model), auto (kernel, else onnx with a warning) (env QFM_MATCHER)")
    ap.add_argument("--k", type=int, default=int(_env("QFM_K", 5)), help="neighbours returned per image (env QFM_K)")
    ap.add_argument("--server", default=_env("TRITONSERVER", "tritonserver"),
                    help="tritonserver executable (env TRITONSERVER)")
    ap.add_argument("--bind", default=_env("QFM_BIND_ADDRESS", "127.0.0.1"),
                    help="address the server listens on; the image sets 0.0.0.0 (env QFM_BIND_ADDRESS)")
    ap.add_argument("--grpc-port", type=int, default=int(_env("QFM_GRPC_PORT", 8001)), help="(env QFM_GRPC_PORT)")
    ap.add_argument("--http-port", type=int, default=int(_env("QFM_HTTP_PORT", 8000)), help="(env QFM_HTTP_PORT)")
    ap.add_argument("--metrics-port", type=int, default=int(_env("QFM_METRICS_PORT", 8002)),
                    help="(env QFM_METRICS_PORT)")
    ap.add_argument("--prepare-only", action="store_true",
                    help="write the repository and print the server command, do not start it")
    ap.add_argument("server_args", nargs="*", help="after `--`: more tritonserver options")
    return ap.parse_args(argv)


def _artifacts(folder: Path, target: str) -> dict:
    need = {"checkpoint": folder / CHECKPOINT, "bank": folder / BANK,
            "onnx": folder / (ONNX_FP16 if target == "gpu-ngc" else ONNX_FP32)}
    missing = [str(p) for p in need.values() if not p.exists()]
    if missing:
        raise EntrypointError(f"artifacts missing: {', '.join(missing)} (stage them with `make image-artifacts` (serving/image_artifacts.py), "
                              f"or mount a folder with that layout at --artifacts)", 2)
    return need


def _run_builder(cmd: list[str], what: str) -> None:
    log(f"building the {what}: {' '.join(map(str, cmd))}")
    # The builders are scripts in export/ that import the project's packages by name: the image
    # does not pip-install the project, so its root goes on their path.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([str(c) for c in cmd], stdout=sys.stdout, stderr=subprocess.PIPE, text=True, env=env)
    if r.returncode != 0:
        sys.stderr.write(r.stderr)
        last = (r.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise EntrypointError(f"{what} build failed (exit {r.returncode}): {last}", 4)


def _gpu_engines(args, arts: dict, gpu: host_probe.Gpu, trt_version: str) -> tuple[Path, Path | None]:
    """(student engine, match engine or None) for this GPU, from the cache or built now."""
    max_batch, preferred, _ = triton_repo.STUDENT_BATCH["gpu-ngc"]
    base = {"gpu_name": gpu.name, "compute_capability": gpu.compute_capability, "tensorrt": trt_version}
    student_key = {**base, "engine": "student", "onnx_sha256": sha256_file(arts["onnx"]),
                   "profile": [1, preferred[0], max_batch]}

    def build_student(work: Path) -> None:
        _run_builder([sys.executable, BUILD_ENGINE, "--onnx", arts["onnx"], "--engine", work / "model.plan",
                      "--precision", "fp16", "--opt-batch", preferred[0], "--max-batch", max_batch,
                      "--timing-cache", engine_cache.timing_cache(args.engine_cache, student_key)],
                     "FP16 student engine")

    folder, built = engine_cache.cached_engines(args.engine_cache, student_key, build_student, log)
    log(f"student engine {'built' if built else 'reused'}: {folder}")
    student = folder / "model.plan"
    if args.matcher == "onnx":
        return student, None

    max_images = RequestLimits().max_images
    match_key = {**base, "engine": "match", "bank_sha256": sha256_file(arts["bank"]), "k": args.k,
                 "profile": [1, 32, max_images],
                 "kernel_sha256": [sha256_file(p) for p in KERNEL_SOURCES]}

    def build_match(work: Path) -> None:
        _run_builder([sys.executable, BUILD_MATCH_ENGINE, "--bank", arts["bank"], "--engine", work / "model.plan",
                      "--k", args.k, "--opt-batch", 32, "--max-batch", max_images], "match engine")

    try:
        folder, built = engine_cache.cached_engines(args.engine_cache, match_key, build_match, log)
    except EntrypointError as e:
        if args.matcher == "kernel":
            raise
        log(f"WARNING: {e}; serving the ONNX match model instead (set QFM_MATCHER=kernel to make this fatal)")
        return student, None
    log(f"match engine {'built' if built else 'reused'}: {folder}")
    return student, folder / "model.plan"


def choose_target(args) -> tuple[str, host_probe.Gpu | None]:
    found = host_probe.gpus()
    if args.target == "auto":
        target = "gpu-ngc" if found else args.cpu_target
    else:
        target = args.target
    if target != "gpu-ngc":
        log(f"{'no GPU visible' if not found else 'GPU ignored (--target ' + target + ')'}: serving {target}")
        return target, None
    if not found:
        raise EntrypointError("--target gpu-ngc but nvidia-smi sees no GPU: run the container with --gpus "
                              "(Docker) or a nvidia.com/gpu request (Kubernetes)", 3)
    gpu = host_probe.one_gpu_model(found)
    log(f"{len(found)} GPU(s): {gpu.name}, compute capability {gpu.compute_capability}, driver {gpu.driver}")
    return target, gpu


def tensorrt_versions() -> str:
    """The Python builder's TensorRT version, after checking that it is the release of the
    libnvinfer the server's backend loads (an engine of another release fails to deserialise)."""
    runtime = host_probe.tensorrt_runtime_version()
    if runtime is None:
        raise EntrypointError("no libnvinfer.so on this host: the gpu-ngc target needs NVIDIA's Triton image "
                              "(its tensorrt_plan backend)", 3)
    try:
        import tensorrt
    except ImportError as e:
        raise EntrypointError(f"TensorRT's Python package is not importable ({e}); the image installs "
                              f"tensorrt-cu13=={runtime}.* (build arg TENSORRT_VERSION)", 3) from e
    if not host_probe.same_release(tensorrt.__version__, runtime):
        raise EntrypointError(f"the engine builder is TensorRT {tensorrt.__version__} but the server loads "
                              f"libnvinfer {runtime}: rebuild the image with --build-arg TENSORRT_VERSION "
                              f"matching the base image", 3)
    return tensorrt.__version__


def write_repository(args, target: str, arts: dict, plans: tuple[Path | None, Path | None]) -> dict:
    """A fresh repository every start (the previous start's target may differ), swapped in whole."""
    student_plan, match_plan = plans
    try:
        with atomic_dir(args.repo) as fresh:
            info = triton_repo.write_repository(target, arts["checkpoint"], fresh, arts["bank"],
                                                onnx=arts["onnx"] if target != "gpu-ngc" else None,
                                                plan=student_plan, k=args.k, match_plan=match_plan)
    except (triton_repo.MissingArtifact, ValueError) as e:   # bank of another student, bad plan, ...
        raise EntrypointError(str(e), 2) from e
    info["out"] = str(args.repo)
    info["matcher"] = "kernel engine" if match_plan else ("onnx" if target != "cpu-pip" else "python onnx")
    info["engines"] = {"student": str(student_plan) if student_plan else None,
                       "match": str(match_plan) if match_plan else None}
    write_json(args.repo.with_name(args.repo.name + ".deployment.json"), info)
    return info


def server_command(args) -> list[str]:
    host = args.bind
    return [args.server, "--model-repository", str(args.repo),
            "--model-control-mode", "explicit", *[f"--load-model={m}" for m in io_names.MODELS],
            "--strict-readiness", "true", "--exit-on-error", "true",
            "--grpc-address", host, "--grpc-port", str(args.grpc_port),
            "--http-address", host, "--http-port", str(args.http_port),
            "--metrics-address", host, "--metrics-port", str(args.metrics_port),
            # per-model latency quantiles for the dashboard (serving/grafana/qfm_dashboard.json)
            "--metrics-config", "summary_latencies=true", *args.server_args]


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        target, gpu = choose_target(args)
        arts = _artifacts(args.artifacts, target)
        plans = (None, None)
        if target == "gpu-ngc":
            plans = _gpu_engines(args, arts, gpu, tensorrt_versions())
        info = write_repository(args, target, arts, plans)
    except (EntrypointError, host_probe.HostError) as e:
        log(f"error: {e}")
        return getattr(e, "code", 3)
    log(f"repository {args.repo}: {json.dumps(info)}")
    cmd = server_command(args)
    if args.prepare_only:
        print(" ".join(cmd))
        return 0
    log(f"exec {' '.join(cmd)}")
    try:
        os.execvp(cmd[0], cmd)
    except OSError as e:
        log(f"error: cannot run {cmd[0]}: {e}")
        return 3


if __name__ == "__main__":
    sys.exit(main())
