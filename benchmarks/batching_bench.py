"""Measure the student's batching configuration through the real server, one change at a time.

    python benchmarks/batching_bench.py --repo triton_repo [--concurrency 8] [--seconds 20]

For each variant, a copy of the repository gets that qfm_student batching block, a fresh
tritonserver starts on localhost, `--concurrency` client threads each send one image per
request to the `qfm_iqm` ensemble for `--seconds`, and we report images/s, p50/p90/p99 latency
and the student's mean executed batch size (from Triton's statistics). All variants run in one
invocation, so their ratios are comparable on this noisy shared machine; absolute numbers are not.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from training.cli import HelpFormatter
from training.data.registry import LIVEC_DEV_ROOT
from qfm_core import io_names

VARIANTS = {
    "no_dynamic_batching": "",
    "dynamic_q1ms": "dynamic_batching { preferred_batch_size: [ 36, 72 ] max_queue_delay_microseconds: 1000 }\n",
    "dynamic_q4ms": "dynamic_batching { preferred_batch_size: [ 36, 72 ] max_queue_delay_microseconds: 4000 }\n",
}


def with_batching(src: Path, dst: Path, block: str) -> None:
    shutil.copytree(src, dst, symlinks=True)
    cfg = dst / io_names.STUDENT_MODEL / "config.pbtxt"
    text = re.sub(r"dynamic_batching \{[^}]*\}\n", block, cfg.read_text())
    cfg.write_text(text)


def run_load(url: str, blob: bytes, concurrency: int, seconds: float) -> dict:
    import tritonclient.grpc as grpcclient

    latencies, errors, stop = [], [], time.time() + seconds

    def worker():
        client = grpcclient.InferenceServerClient(url)
        inp = grpcclient.InferInput(io_names.IMAGE, [1], "BYTES")
        inp.set_data_from_numpy(np.array([blob], dtype=object))
        while time.time() < stop:
            t = time.perf_counter()
            try:
                client.infer(io_names.ENSEMBLE, [inp], client_timeout=60)
                latencies.append(time.perf_counter() - t)
            except Exception as e:  # counted, reported
                errors.append(repr(e))

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.time() - t0
    lat = np.asarray(latencies) * 1000
    return {"images_per_s": len(latencies) / elapsed, "requests": len(latencies), "errors": len(errors),
            "p50_ms": float(np.percentile(lat, 50)), "p90_ms": float(np.percentile(lat, 90)),
            "p99_ms": float(np.percentile(lat, 99))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--repo", type=Path, default=Path("triton_repo"))
    ap.add_argument("--image", type=Path, default=LIVEC_DEV_ROOT / "images" / "1001.JPG")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=Path("build/batching_bench.json"))
    args = ap.parse_args(argv)
    import tritonclient.grpc as grpcclient

    from serving.triton_server import TritonServer

    blob = args.image.read_bytes()
    results = {}
    for name, block in VARIANTS.items():
        with tempfile.TemporaryDirectory() as tmp:
            repo = Path(tmp) / "repo"
            with_batching(args.repo, repo, block)
            with TritonServer(repo) as server:
                run_load(server.grpc_url, blob, args.concurrency, 3.0)  # warm-up
                client = grpcclient.InferenceServerClient(server.grpc_url)
                before = client.get_inference_statistics(io_names.STUDENT_MODEL, as_json=True)["model_stats"][0]
                res = run_load(server.grpc_url, blob, args.concurrency, args.seconds)
                after = client.get_inference_statistics(io_names.STUDENT_MODEL, as_json=True)["model_stats"][0]
                crops = int(after.get("inference_count", 0)) - int(before.get("inference_count", 0))
                execs = int(after.get("execution_count", 0)) - int(before.get("execution_count", 0))
                res["student_mean_batch"] = crops / max(1, execs)
                results[name] = res
        print(f"{name:22s} {res['images_per_s']:6.1f} img/s  p50 {res['p50_ms']:6.0f} ms  p90 {res['p90_ms']:6.0f} ms  "
              f"p99 {res['p99_ms']:6.0f} ms  mean student batch {res['student_mean_batch']:5.1f}  errors {res['errors']}",
              flush=True)
    base = results["no_dynamic_batching"]["images_per_s"]
    for name, r in results.items():
        r["throughput_vs_no_batching"] = r["images_per_s"] / base
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"concurrency": args.concurrency, "seconds": args.seconds, "results": results}, indent=2))
    print("throughput ratio vs no dynamic batching: " +
          ", ".join(f"{k} {v['throughput_vs_no_batching']:.2f}x" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
