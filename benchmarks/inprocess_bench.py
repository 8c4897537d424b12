"""The student in-process on the same crops: PyTorch eager vs ONNX Runtime (FP32, FP16), and on a
GPU PyTorch FP16 and the TensorRT FP16 engine. Unavailable backends are skipped with the reason
(a missing ONNX or engine included), so one missing artifact never stops the others.

    python benchmarks/inprocess_bench.py --checkpoint models/qfm_iqm --onnx-dir build [--batch 16]
    python benchmarks/inprocess_bench.py --backends torch_cuda_fp16 --batch 128   # a bare GPU host
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    TensorRTEngine,
    crops_batch,
    dry_run,
    skip,
    timed,
    write_json,
)
from qfm_core import io_names
from training.cli import HelpFormatter
from training.checkpoint import BUNDLED

BACKENDS = ("torch_eager_fp32", "ort_fp32", "ort_fp16", "torch_cuda_fp16", "tensorrt_fp16")


def bench_torch_eager(model, x, warmup, iters):
    xt = torch.from_numpy(x)
    with torch.no_grad():
        return timed(lambda: model(xt), warmup, iters)


def bench_ort(path: Path, x, warmup, iters, threads: int):
    import onnxruntime as ort

    if not path.exists():
        raise RuntimeError(f"{path} not built (python export/to_onnx.py --checkpoint models/qfm_iqm --out build/)")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    xin = x.astype(np.float16 if sess.get_inputs()[0].type == "tensor(float16)" else np.float32)
    return timed(lambda: sess.run(None, {io_names.CROPS: xin}), warmup, iters)


def bench_torch_cuda_fp16(model, x, warmup, iters):
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible to PyTorch")
    m = model.half().cuda()
    xt = torch.from_numpy(x).half().cuda()

    def run():
        with torch.no_grad():
            m(xt)
        torch.cuda.synchronize()

    return timed(run, warmup, iters)


def bench_tensorrt(plan: Path, x, warmup, iters):
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeError("TensorRT Python package not installed") from e
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU visible")
    if not plan.exists():
        raise RuntimeError(f"{plan} not built (export/build_engine.py on this GPU host)")
    engine = TensorRTEngine(trt, plan)
    xt = torch.from_numpy(x).half().cuda()

    def run():
        engine.run(**{io_names.CROPS: xt})

    return timed(run, warmup, iters)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=BUNDLED)
    ap.add_argument("--onnx-dir", type=Path, default=Path("build"))
    ap.add_argument("--plan", type=Path, default=Path("build/engines/qfm_student_fp16.plan"))
    ap.add_argument("--batch", type=int, default=16, help="crops per call")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads for PyTorch and ONNX Runtime")
    ap.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    ap.add_argument("--out", type=Path, default=Path("build/inprocess_bench.json"))
    args = ap.parse_args(argv)
    if dry_run(args, ("training.checkpoint",)):
        return 0
    from training.checkpoint import load_student

    torch.set_num_threads(args.threads)
    model = load_student(args.checkpoint)
    cfg = json.loads((args.checkpoint / "config.json").read_text())["student"]
    x = crops_batch(cfg, n_images=4, grid=2, allow_random=True)
    x = np.concatenate([x] * (args.batch // len(x) + 1))[: args.batch]
    runs = {
        "torch_eager_fp32": lambda: bench_torch_eager(model, x, 2, args.iters),
        "ort_fp32": lambda: bench_ort(args.onnx_dir / "qfm_student_fp32.onnx", x, 2, args.iters, args.threads),
        "ort_fp16": lambda: bench_ort(args.onnx_dir / "qfm_student_fp16.onnx", x, 2, args.iters, args.threads),
        "torch_cuda_fp16": lambda: bench_torch_cuda_fp16(load_student(args.checkpoint), x, 5, args.iters * 5),
        "tensorrt_fp16": lambda: bench_tensorrt(args.plan, x, 5, args.iters * 5),
    }
    results = {}
    for name in args.backends:
        fn = runs[name]
        try:
            times = fn()
            med = statistics.median(times)
            results[name] = {"median_s": med, "crops_per_s": args.batch / med}
            print(f"{name:18s} {args.batch / med:8.1f} crops/s  (median of {len(times)} calls of {args.batch})")
        except (RuntimeError, FileNotFoundError) as e:   # no GPU, no TensorRT, artifact not built
            results[name] = {"skipped": str(e)}
            print(f"{name:18s} skipped: {e}")
        except Exception as e:   # anything else is a failure of that backend; the others still run
            results[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{name:18s} FAILED: {type(e).__name__}: {e}")
    write_json({"batch": args.batch, "threads": args.threads, "results": results}, args.out)
    if any("error" in r for r in results.values()):
        return 1
    if all("skipped" in r for r in results.values()):
        return skip(next(iter(results.values()))["skipped"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
