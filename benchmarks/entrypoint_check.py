"""The serving container's GPU start on a GPU host with datacenter TensorRT, without Docker:
serving/entrypoint.py --prepare-only twice on one fresh engine cache.

  1. first start: finds the GPU, checks the TensorRT release, builds the student and match
     engines into the cache, writes the gpu-ngc repository (timed);
  2. second start: the same key, so both engines are reused and nothing is built (timed);
  3. the repository: TensorRT student, match engine with our kernel, identity of the bank.

    python benchmarks/entrypoint_check.py [--out build/gpu_check/entrypoint]

Exits 77 ("skipped") without TensorRT or its runtime library, 2 without a GPU, 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import NO_TENSORRT, REPO, dry_run, skip, write_json
from training.cli import HelpFormatter


def _start(artifacts: Path, cache: Path, repo: Path) -> tuple[float, str]:
    t0 = time.time()
    r = subprocess.run([sys.executable, "-m", "serving.entrypoint", "--artifacts", str(artifacts), "--engine-cache",
                        str(cache), "--repo", str(repo), "--matcher", "kernel", "--prepare-only"],
                       cwd=REPO, capture_output=True, text=True)
    print(r.stdout[-4000:], r.stderr[-4000:], sep="\n")
    if r.returncode != 0:
        raise RuntimeError(f"entrypoint exited {r.returncode}")
    return time.time() - t0, r.stdout


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("build/gpu_check/entrypoint"))
    args = ap.parse_args(argv)
    if dry_run(args, ("serving.entrypoint", "serving.image_artifacts", "export.to_onnx", "export.build_bank")):
        return 0
    from serving import host_probe
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return skip(NO_TENSORRT)
    if host_probe.tensorrt_runtime_version() is None:
        return skip("no libnvinfer.so in the system library folders (the Triton image has it)")
    if not host_probe.gpus():
        print("entrypoint_check: nvidia-smi sees no GPU", file=sys.stderr)
        return 2
    from serving import image_artifacts
    from training.checkpoint import BUNDLED
    build = args.out / "build"
    build.mkdir(parents=True, exist_ok=True)
    for cmd in (["export/to_onnx.py", "--checkpoint", BUNDLED, "--out", build, "--parity-images", "4"],
                ["export/build_bank.py", "--checkpoint", BUNDLED, "--dataset", "livec", "--limit", "200",
                 "--out", build / image_artifacts.BANK]):
        r = subprocess.run([sys.executable, *map(str, cmd)], cwd=REPO, capture_output=True, text=True)
        if r.returncode != 0:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
    artifacts, cache, repo = args.out / "artifacts", args.out / "engine_cache", args.out / "run" / "repo"
    image_artifacts.stage(artifacts, BUNDLED, build)
    first, log1 = _start(artifacts, cache, repo)
    second, log2 = _start(artifacts, cache, repo)
    deployment = json.loads(repo.with_name(repo.name + ".deployment.json").read_text())
    checks = {"first_built_both": log1.count("engine built") == 2,
              "second_reused_both": log2.count("engine reused") == 2 and "engine built" not in log2,
              "gpu_ngc_with_kernel": deployment["target"] == "gpu-ngc" and deployment["engines"]["match"] is not None,
              "cache_folders": len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2}
    result = {"first_start_s": round(first, 1), "second_start_s": round(second, 1), "checks": checks,
              "deployment": deployment, "ok": all(checks.values())}
    write_json(result, args.out / "entrypoint_check.json")
    print(f"entrypoint: first start {first:.1f} s (engines built), second {second:.1f} s (reused); "
          + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in checks.items()))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
