"""`make bench`: the CPU benchmark set in one run, and the ratio table.

    python benchmarks/bench_report.py

1. in-process student on the same crops: PyTorch eager vs ONNX Runtime FP32 (2 threads); and, for
   context, one plain process doing the whole bytes -> score path (decode, crops, served ONNX)
2. preprocessing alone: decode + 3x3 crops (+ normalise, the GPU target's variant), one core
3. a real Triton server (cpu-pip repository, built if missing): concurrency sweep of the
   ensemble (bytes in) and of the student alone (tensors in), with Triton's per-model compute
   times read from its statistics
Ratios are of figures measured in this one run on this machine; absolute numbers on a shared
2-core machine are noisy and are reported for context only.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks import inprocess_bench, preprocess_bench, serve_bench
from benchmarks.common import REPO, crops_batch, sample_images, timed, write_json
from training.cli import HelpFormatter
from qfm_core import io_names
from training.checkpoint import BUNDLED

TARGETS = {"triton_vs_inprocess_ort": 0.85, "ort_vs_eager": 3.0}
# qfm_score awaits the student (BLS), so its compute time includes the student's.
STEPS = (io_names.SCORE_MODEL, io_names.STUDENT_MODEL, io_names.MATCH_MODEL)


def compute_ns(url: str) -> dict:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    out = {}
    for m in STEPS:
        s = client.get_inference_statistics(m, as_json=True)["model_stats"][0]["inference_stats"]
        out[m] = sum(int(s.get(k, {}).get("ns", 0)) for k in ("compute_input", "compute_infer", "compute_output"))
    return out


def _client_cpu() -> float:
    """CPU seconds of this process (all threads): the benchmark client, or in-process ORT."""
    import resource
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _ort_cpu_seconds(path: Path, x, runs: int) -> float:
    """CPU seconds (both threads) of one in-process ONNX Runtime call on x, session already warm."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    sess.run(None, {io_names.CROPS: x})
    c0 = _client_cpu()
    for _ in range(runs):
        sess.run(None, {io_names.CROPS: x})
    return (_client_cpu() - c0) / runs


def _inprocess_end_to_end(served_onnx: Path, images: list[Path], iters: int) -> float:
    """images/s of one plain Python process doing what the ensemble does for the same photographs:
    guarded decode -> 3x3 uint8 crops -> the served ONNX (uint8 in, 2 threads). Sequential (decode
    does not overlap inference), i.e. what a user gets from a script instead of a server."""
    import onnxruntime as ort

    from qfm_core.image_guard import Limits, decode_untrusted
    from qfm_core.crops import channels_first, grid_crops

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(served_onnx), opts, providers=["CPUExecutionProvider"])
    blobs, limits = [p.read_bytes() for p in images], Limits()

    def run():
        crops = np.concatenate([grid_crops(decode_untrusted(b, limits), 224, 3) for b in blobs])
        sess.run(None, {io_names.CROPS: np.ascontiguousarray(channels_first(crops))})

    return len(blobs) / statistics.median(timed(run, 1, iters))


def _images_served(url: str) -> int:
    import tritonclient.grpc as grpcclient
    s = grpcclient.InferenceServerClient(url).get_inference_statistics(io_names.SCORE_MODEL, as_json=True)
    return int(s["model_stats"][0].get("inference_count", 0))   # the sweep sends one image per request


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=BUNDLED)
    ap.add_argument("--window", type=float, default=3.0)
    ap.add_argument("--out", type=Path, default=REPO / "build" / "bench_report.json")
    args = ap.parse_args(argv)
    from serving import demo
    from serving.triton_server import TritonServer
    from training.checkpoint import load_student

    demo.ensure_artifacts("livec")
    torch.set_num_threads(2)
    cfg = json.loads((args.checkpoint / "config.json").read_text())["student"]
    x = crops_batch(cfg, n_images=4, grid=3)[:36]  # 4 images x 9 crops, the serving crops
    model = load_student(args.checkpoint)
    eager = statistics.median(inprocess_bench.bench_torch_eager(model, x, 1, 5))
    ort32 = statistics.median(inprocess_bench.bench_ort(REPO / "build" / "qfm_student_fp32.onnx", x, 2, 10, 2))
    ort32_cpu = _ort_cpu_seconds(REPO / "build" / "qfm_student_fp32.onnx", x, runs=5)
    crops_per_image = 9
    inproc = {"torch_eager_crops_per_s": len(x) / eager, "ort_fp32_crops_per_s": len(x) / ort32,
              "ort_fp32_images_per_s": len(x) / ort32 / crops_per_image}
    print(f"in-process: PyTorch eager {inproc['torch_eager_crops_per_s']:.1f} crops/s, ONNX Runtime FP32 "
          f"{inproc['ort_fp32_crops_per_s']:.1f} crops/s ({inproc['ort_fp32_images_per_s']:.1f} images/s at 9 crops)")
    e2e = _inprocess_end_to_end(REPO / "triton_repo" / io_names.STUDENT_MODEL / "1" / "model.onnx", sample_images(4), 5)
    print(f"in-process end to end (decode + crops + ONNX Runtime, one process): {e2e:.1f} images/s")
    pre = preprocess_bench.main(["--images", "24", "--out", str(REPO / "build" / "preprocess_bench.json")])
    pre_ips = json.loads((REPO / "build" / "preprocess_bench.json").read_text())["results"]["decode_grid_crops"][
        "images_per_s_one_core"]

    with TritonServer(REPO / "triton_repo") as server:
        cpu0, client0, served0 = server.cpu_seconds(), _client_cpu(), _images_served(server.grpc_url)
        sweep = serve_bench.sweep(server.grpc_url, args.checkpoint, [1, 4, 8, 16], args.window, 0.10, 5,
                                  targets=("ensemble",))
        cpu1, client1, served1 = server.cpu_seconds(), _client_cpu(), _images_served(server.grpc_url)
        steps = compute_ns(server.grpc_url)
        sweep.update(serve_bench.sweep(server.grpc_url, args.checkpoint, [4, 8], args.window, 0.10, 5,
                                       targets=("student",)))
    # Where the time goes: CPU-milliseconds per image by process over the whole ensemble sweep,
    # beside the in-process ONNX Runtime cost of the same 9 crops (both cores' worth of CPU time).
    images = max(1, served1 - served0)
    cpu_ms = {k: 1000 * (cpu1.get(k, 0.0) - cpu0.get(k, 0.0)) / images for k in cpu1}
    cpu_ms["client (this process: asyncio gRPC)"] = 1000 * (client1 - client0) / images
    inproc_cpu_ms = 1000 * ort32_cpu / len(x) * crops_per_image
    print(f"\nCPU ms per image over the ensemble sweep ({images} images), vs in-process ONNX Runtime "
          f"{inproc_cpu_ms:.0f} ms (CPU time, 2 threads, 9 crops):")
    for k, v in sorted(cpu_ms.items(), key=lambda kv: -kv[1]):
        print(f"  {k:38s} {v:7.1f}")
    print(f"  {'total':38s} {sum(cpu_ms.values()):7.1f}")
    best = max(sweep["ensemble"], key=lambda r: r["images_per_s"])
    best_student = max(sweep["student"], key=lambda r: r["images_per_s"])
    ratios = {
        "triton_vs_inprocess_ort": best["images_per_s"] / inproc["ort_fp32_images_per_s"],
        "ort_vs_eager": inproc["ort_fp32_crops_per_s"] / inproc["torch_eager_crops_per_s"],
        "student_via_triton_vs_inprocess_ort": best_student["images_per_s"] / inproc["ort_fp32_images_per_s"],
        # Context, not the target: the same bytes-to-score work done by one plain process.
        "triton_vs_inprocess_end_to_end": best["images_per_s"] / e2e,
        # qfm_score's share of the server's CPU time (its compute time includes waiting for the
        # student's BLS answers, so the CPU seconds of its stub are the honest measure).
        "score_model_share_of_server_cpu": cpu_ms.get(io_names.SCORE_MODEL, 0.0)
        / max(1e-9, sum(v for k, v in cpu_ms.items() if not k.startswith("client"))),
    }
    print("\n| ratio (measured in this run) | value | target |\n|---|---|---|")
    for k, v in ratios.items():
        target = TARGETS.get(k)
        mark = "" if target is None else (" (met)" if v >= target else " (NOT met)")
        print(f"| {k} | {v:.2f}{mark} | {'>= ' + str(target) if target else '-'} |")
    print(f"\nbest ensemble: {best['images_per_s']:.1f} images/s at concurrency {best['concurrency']} "
          f"(p50 {best['p50_ms']:.0f} ms, p99 {best['p99_ms']:.0f} ms); preprocessing alone {pre_ips:.1f} images/s "
          f"on one core; server compute by step: " + ", ".join(f"{k} {v / 1e9:.1f} s" for k, v in steps.items()))
    write_json({"inprocess": inproc, "inprocess_end_to_end_images_per_s": e2e, "cpu_ms_per_image": cpu_ms,
                "inprocess_ort_cpu_ms_per_image": inproc_cpu_ms, "preprocess_images_per_s_one_core": pre_ips,
                "sweep": sweep, "server_compute_ns": steps, "ratios": ratios, "targets": TARGETS}, args.out)
    serve_bench.plot(sweep, args.out.with_suffix(".png"))
    return 0 if pre == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
