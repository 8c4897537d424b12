"""Concurrency sweep against a running Triton server, following perf_analyzer's method.

    python benchmarks/serve_bench.py --url 127.0.0.1:8001 [--concurrency 1 2 4 8 16 32 64]

For each concurrency level, that many asyncio gRPC clients send back-to-back requests; the
measurement is repeated in windows of --window seconds until the last three windows agree within
--stability (10 %), as perf_analyzer does, and the stable windows are reported: images/s and
p50 / p90 / p99 latency. Two targets: the `qfm_iqm` ensemble (one encoded image per request) and
`qfm_student` alone (that image's crops as a tensor). Writes JSON and a PNG plot.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import crops_batch, sample_images, write_json
from training.cli import HelpFormatter
from qfm_core import io_names
from training.checkpoint import BUNDLED


async def _client_loop(url, make_request, stop_at, latencies, errors):
    import tritonclient.grpc.aio as aiogrpc

    client = aiogrpc.InferenceServerClient(url)
    model, inputs = make_request()
    try:
        while time.perf_counter() < stop_at[0]:
            t = time.perf_counter()
            try:
                await client.infer(model, inputs, client_timeout=120)
                latencies.append((t, time.perf_counter() - t))
            except Exception as e:  # counted and reported; a sweep must not hide failures
                errors.append(repr(e))
    finally:
        await client.close()


async def measure(url, make_request, concurrency: int, window: float, stability: float, max_windows: int,
                  images_per_request: int) -> dict:
    latencies, errors = [], []
    start = time.perf_counter()
    stop_at = [start + 1.0 + window * max_windows]  # 1 s warm-up, then windows
    tasks = [asyncio.create_task(_client_loop(url, make_request, stop_at, latencies, errors))
             for _ in range(concurrency)]
    windows = []
    t0 = start + 1.0
    while True:
        await asyncio.sleep(max(0.0, t0 + window * (len(windows) + 1) - time.perf_counter()))
        lo, hi = t0 + window * len(windows), t0 + window * (len(windows) + 1)
        done = [lat for (t, lat) in latencies if lo <= t < hi]
        windows.append({"throughput": len(done) * images_per_request / window, "latencies": done})
        last = windows[-3:]
        tputs = [w["throughput"] for w in last]
        if len(last) == 3 and min(tputs) > 0 and (max(tputs) - min(tputs)) / np.mean(tputs) <= stability:
            stable = True
            break
        if len(windows) >= max_windows:
            stable = False
            break
    stop_at[0] = 0
    await asyncio.gather(*tasks)
    lat = np.asarray([x for w in windows[-3:] for x in w["latencies"]]) * 1000
    return {"concurrency": concurrency, "images_per_s": float(np.mean([w["throughput"] for w in windows[-3:]])),
            "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "p90_ms": float(np.percentile(lat, 90)) if len(lat) else None,
            "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "windows": len(windows), "stable": stable, "errors": len(errors)}


def request_factories(checkpoint: Path, url: str):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import triton_to_np_dtype

    blob = sample_images(2)[1].read_bytes()
    cfg = json.loads((checkpoint / "config.json").read_text())["student"]
    # The student's input type differs by target (CPU: raw uint8 pixels; GPU: normalised FP16).
    wire = grpcclient.InferenceServerClient(url).get_model_metadata(io_names.STUDENT_MODEL, as_json=True)["inputs"][0]["datatype"]
    crops = crops_batch(cfg, n_images=1, grid=3, dtype=triton_to_np_dtype(wire))  # one image's 9 crops

    def ensemble():
        inp = grpcclient.InferInput(io_names.IMAGE, [1], "BYTES")
        inp.set_data_from_numpy(np.array([blob], dtype=object))
        return io_names.ENSEMBLE, [inp]

    def student():
        inp = grpcclient.InferInput(io_names.CROPS, list(crops.shape), wire)
        inp.set_data_from_numpy(crops)
        return io_names.STUDENT_MODEL, [inp]

    return {"ensemble": ensemble, "student": student}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    for target, rows in results.items():
        c = [r["concurrency"] for r in rows]
        ax[0].plot(c, [r["images_per_s"] for r in rows], "o-", label=target)
        ax[1].plot(c, [r["p99_ms"] for r in rows], "o-", label=f"{target} p99")
        ax[1].plot(c, [r["p50_ms"] for r in rows], "x--", label=f"{target} p50")
    for a, yl in zip(ax, ("images/s", "latency (ms)")):
        a.set_xscale("log", base=2)
        a.set_xlabel("concurrent requests")
        a.set_ylabel(yl)
        a.grid(alpha=0.3)
        a.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep(url: str, checkpoint: Path, levels, window: float, stability: float, max_windows: int,
          targets=("ensemble", "student")) -> dict:
    factories = request_factories(checkpoint, url)
    results = {}
    for target in targets:
        results[target] = []
        for c in levels:
            r = asyncio.run(measure(url, factories[target], c, window, stability, max_windows, 1))
            results[target].append(r)
            print(f"{target:9s} c={c:3d} {r['images_per_s']:7.1f} img/s  p50 {r['p50_ms']:7.1f}  p90 {r['p90_ms']:7.1f}  "
                  f"p99 {r['p99_ms']:7.1f} ms  windows {r['windows']}{'' if r['stable'] else ' (not stable)'}  "
                  f"errors {r['errors']}", flush=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--url", default="127.0.0.1:8001")
    ap.add_argument("--checkpoint", type=Path, default=BUNDLED)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    ap.add_argument("--window", type=float, default=3.0, help="seconds per measurement window")
    ap.add_argument("--stability", type=float, default=0.10, help="max spread of the last 3 windows")
    ap.add_argument("--max-windows", type=int, default=6)
    ap.add_argument("--out", type=Path, default=Path("build/serve_bench.json"))
    args = ap.parse_args(argv)
    results = sweep(args.url, args.checkpoint, args.concurrency, args.window, args.stability, args.max_windows)
    write_json({"url": args.url, "results": results}, args.out)
    plot(results, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
