"""Our fused distance + top-k kernel against torch.cdist + topk and a GEMM-based PyTorch
formulation, on a GPU: correctness first, then timing (CUDA events, warm-up, median of many runs).

    python benchmarks/kernel_bench.py [--k 10] [--iters 20] [--out build/kernel_bench.json]

Grid: N in {1, 64, 256} queries x M in {10k, 100k, 1M} bank rows, D = 384, FP16 inputs. For each
cell the table gives milliseconds, achieved TFLOP/s (2*N*M*D / t) and GB/s (bank + queries read,
results written), our speed-up over torch.cdist + topk, and our time over the roofline time
max(FLOPs / peak FLOP/s, bytes / peak GB/s), where both peaks are MEASURED here first (an FP16
GEMM and a device-to-device copy), not taken from a datasheet. Targets: >= 2x faster than
torch.cdist + topk at N = 256, M = 1M, and within 2x of the roofline. Exits 2 without a GPU.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import dry_run
from training.cli import HelpFormatter

NS, MS, D = (1, 64, 256), (10_000, 100_000, 1_000_000), 384


def cuda_time(torch, fn, warmup: int, iters: int) -> float:
    """Median milliseconds of fn() between CUDA events."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def measured_peaks(torch) -> dict:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    ms = cuda_time(torch, lambda: a @ a, 3, 10)
    tflops = 2 * 8192 ** 3 / ms / 1e9
    src = torch.empty(1 << 30, device="cuda", dtype=torch.uint8)
    dst = torch.empty_like(src)
    ms_copy = cuda_time(torch, lambda: dst.copy_(src), 3, 10)
    gbs = 2 * src.numel() / ms_copy / 1e6          # read + write
    return {"fp16_gemm_tflops": tflops, "copy_gbs": gbs}


def torch_cdist_topk(torch, q, b, k):
    d = torch.cdist(q, b)                           # (N, M) materialised
    return torch.topk(d, k, dim=1, largest=False)


def torch_gemm_topk(torch, q, b, b_sq, k):
    d = (q.float().pow(2).sum(1, keepdim=True) + b_sq[None, :]) - 2.0 * (q @ b.T).float()
    return torch.topk(d, k, dim=1, largest=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("build/kernel_bench.json"))
    args = ap.parse_args(argv)
    if dry_run(args, ("torch", "export.kernels.launch")):
        return 0
    import torch
    if not torch.cuda.is_available():
        print("kernel_bench: no CUDA GPU visible; nothing measured", file=sys.stderr)
        return 2
    from export.kernels.launch import PairwiseTopK

    knn = PairwiseTopK()
    peaks = measured_peaks(torch)
    gpu = torch.cuda.get_device_name()
    print(f"# {gpu}, {knn.arch}, {knn.sm_count} SMs; measured peaks: FP16 GEMM {peaks['fp16_gemm_tflops']:.0f} "
          f"TFLOP/s, copy {peaks['copy_gbs']:.0f} GB/s; k = {args.k}, D = {D}, median of {args.iters}")
    print(f"{'N':>4} {'M':>8} | {'ours ms':>8} {'TFLOP/s':>7} {'GB/s':>6} | {'cdist ms':>8} {'gemm ms':>8} | "
          f"{'x cdist':>7} {'x gemm':>6} {'/roofline':>9} | recall")
    rows, g = [], torch.Generator(device="cuda").manual_seed(0)
    for m in MS:
        b = torch.randn(m, D, device="cuda", dtype=torch.float16, generator=g)
        b_sq = b.float().pow(2).sum(1)
        for n in NS:
            q = torch.randn(n, D, device="cuda", dtype=torch.float16, generator=g)
            ours_d, ours_i = knn.topk(q, b, args.k)
            ref_d, ref_i = torch_gemm_topk(torch, q.double(), b.double(), b.double().pow(2).sum(1), args.k)
            recall = float(np.mean([len(set(a) & set(r)) / args.k for a, r in
                                    zip(ours_i.cpu().tolist(), ref_i.cpu().tolist())]))
            max_err = float((ours_d.double() - ref_d).abs().max())
            t_ours = cuda_time(torch, lambda: knn.topk(q, b, args.k), 3, args.iters)
            t_cdist = cuda_time(torch, lambda: torch_cdist_topk(torch, q, b, args.k), 3, args.iters)
            t_gemm = cuda_time(torch, lambda: torch_gemm_topk(torch, q, b, b_sq, args.k), 3, args.iters)
            flops, nbytes = 2 * n * m * D, 2 * (m * D + n * D) + 8 * n * args.k
            roof_ms = max(flops / (peaks["fp16_gemm_tflops"] * 1e9), nbytes / (peaks["copy_gbs"] * 1e6))
            row = {"n": n, "m": m, "ours_ms": t_ours, "cdist_ms": t_cdist, "gemm_ms": t_gemm,
                   "tflops": flops / t_ours / 1e9, "gbs": nbytes / t_ours / 1e6, "speedup_cdist": t_cdist / t_ours,
                   "speedup_gemm": t_gemm / t_ours, "over_roofline": t_ours / roof_ms, "recall_vs_fp64": recall,
                   "max_abs_distance_error": max_err}
            rows.append(row)
            print(f"{n:4d} {m:8d} | {t_ours:8.3f} {row['tflops']:7.1f} {row['gbs']:6.0f} | {t_cdist:8.3f} "
                  f"{t_gemm:8.3f} | {row['speedup_cdist']:7.2f} {row['speedup_gemm']:6.2f} "
                  f"{row['over_roofline']:9.2f} | {recall:.3f}")
        b = b_sq = None   # free the bank before the next size
        torch.cuda.empty_cache()
    key = next(r for r in rows if r["n"] == 256 and r["m"] == 1_000_000)
    targets = {"speedup_vs_cdist_n256_m1M": key["speedup_cdist"], "met_2x_cdist": key["speedup_cdist"] >= 2.0,
               "over_roofline_n256_m1M": key["over_roofline"], "met_within_2x_roofline": key["over_roofline"] <= 2.0}
    print(f"targets at N=256, M=1M: {key['speedup_cdist']:.2f}x vs cdist+topk (>= 2: "
          f"{'met' if targets['met_2x_cdist'] else 'MISSED'}), {key['over_roofline']:.2f}x the roofline time "
          f"(<= 2: {'met' if targets['met_within_2x_roofline'] else 'MISSED'})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"gpu": gpu, "arch": knn.arch, "peaks": peaks, "k": args.k, "rows": rows,
                                    "targets": targets}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
