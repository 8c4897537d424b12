"""Build the TensorRT match engine: query embeddings -> k nearest bank entries, with our fused
distance + top-k kernel inside the engine as an AOT plugin (export/match_plugin.py).

    python export/build_match_engine.py --bank build/bank.safetensors --k 5 \
        --engine build/engines/qfm_match.plan [--metric sq_l2] [--max-batch 256]

Inputs: `query` (N, D) fp32 (the student's embedding output). Outputs: `neighbor_distances`
(N, k) fp32, `neighbor_index` (N, k) int64, `neighbor_scores` (N, k) fp32, `neighbor_ids` (N, k)
int64: the names of the ONNX match model, so Triton's config is the same for both.

The bank is a constant of this engine, not an input. Why: Triton's tensorrt_plan backend takes
every input from the request, and a million-row bank is 768 MB; as a constant it is uploaded once.
Replacing the bank rebuilds this engine only (seconds), never the student; with Triton's explicit
model control, `load qfm_match` swaps it while the student keeps serving.

Needs datacenter TensorRT with `tensorrt.plugin` and a GPU (the AOT implementation is compiled for
the build GPU). Without them it stops with one line saying so.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from export import match_onnx
from export.bank import load_bank
from export.build_engine import BuildError, cuda_device, load_backend
from export.files import sha256_file
from export.kernels.compile import K_MAX
from export.kernels.launch import split_bank


def build(bank_path: Path, engine_path: Path, k: int, metric: str, batches: tuple[int, int, int],
          workspace_gb: float = 2.0, verbose: bool = False) -> dict:
    bank = load_bank(bank_path)
    emb = np.ascontiguousarray(bank["embeddings"], np.float32)
    m, dim = emb.shape
    if not 1 <= k <= min(K_MAX, m):
        raise BuildError(f"k must be in 1..min({K_MAX}, bank size {m}), got {k}")
    if dim % 8:   # the kernel's 16-byte loads; every registered student has D = 384
        raise BuildError(f"embedding width {dim} is not a multiple of 8; the kernel needs D % 8 == 0")
    gpu = cuda_device()
    if gpu is None:
        raise BuildError("no CUDA GPU: the plugin's kernel is compiled for the build GPU; run on a GPU host")
    trt = load_backend("tensorrt")
    try:
        from export import match_plugin
        match_plugin.register()
        import tensorrt.plugin as trtp
    except ImportError as e:
        raise BuildError(f"this TensorRT has no tensorrt.plugin ({e}); TensorRT >= 10.9 is needed") from e

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    query = network.add_input(match_onnx.QUERY, trt.float32, (-1, dim))
    q16 = network.add_cast(query, trt.float16).get_output(0)
    bank16 = np.ascontiguousarray(emb.astype(np.float16))
    keep = [bank16]   # TensorRT reads the weights at build time: keep the arrays alive until then
    bank_t = network.add_constant(bank16.shape, trt.Weights(bank16)).get_output(0)
    splits, _ = split_bank(m, batches[1], 2, sm_count=132)   # schedule for the opt batch on an H100-sized GPU
    plugin = network.add_plugin(trtp.op.qfm.knn_partial(q16, bank_t, k=k, splits=splits, metric=metric), aot=True)
    part_d, part_i = plugin.get_output(0), plugin.get_output(1)
    top = network.add_topk(part_d, trt.TopKOperation.MIN, k, 1 << 1)
    dist, pos = top.get_output(0), top.get_output(1)
    index = network.add_gather_v2(part_i, pos, trt.GatherMode.ELEMENT)
    index.axis = 1
    index32 = index.get_output(0)
    scores = np.ascontiguousarray(bank["scores"], np.float32)
    ids = np.ascontiguousarray(bank["ids"], np.int64)
    keep += [scores, ids]
    scores_t = network.add_constant((m,), trt.Weights(scores)).get_output(0)
    ids_t = network.add_constant((m,), trt.Weights(ids)).get_output(0)
    outputs = {match_onnx.DISTANCES: dist,
               match_onnx.INDEX: network.add_cast(index32, trt.int64).get_output(0),
               match_onnx.SCORES: network.add_gather(scores_t, index32, 0).get_output(0),
               match_onnx.IDS: network.add_gather(ids_t, index32, 0).get_output(0)}
    for name, t in outputs.items():
        t.name = name
        network.mark_output(t)

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(match_onnx.QUERY, *[(b, dim) for b in batches])
    config.add_optimization_profile(profile)
    t0 = time.time()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError("TensorRT could not build the match engine (messages above)")
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".partial")
    tmp.write_bytes(bytes(plan))
    os.replace(tmp, engine_path)
    info = {"tensorrt": trt.__version__, "gpu": gpu, "bank": str(bank_path), "bank_sha256": sha256_file(bank_path),
            "bank_rows": m, "dim": dim, "k": k, "metric": metric, "splits": splits, "batches": list(batches),
            "plugin": "qfm::knn_partial (AOT, PTX in the engine)", "build_seconds": round(time.time() - t0, 2),
            "plan_sha256": sha256_file(engine_path)}
    engine_path.with_name(engine_path.name + ".json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bank", required=True, type=Path, help="bank file from export/build_bank.py")
    ap.add_argument("--engine", required=True, type=Path, help="output plan")
    ap.add_argument("--k", type=int, default=5, help=f"neighbours per query, 1..{K_MAX} (default: 5)")
    ap.add_argument("--metric", choices=match_onnx.METRICS, default="sq_l2")
    ap.add_argument("--min-batch", type=int, default=1)
    ap.add_argument("--opt-batch", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=256)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if not 1 <= args.min_batch <= args.opt_batch <= args.max_batch:
        ap.error("need 1 <= --min-batch <= --opt-batch <= --max-batch")
    try:
        info = build(args.bank, args.engine, args.k, args.metric, (args.min_batch, args.opt_batch, args.max_batch),
                     verbose=args.verbose)
    except (BuildError, FileNotFoundError, ValueError) as e:
        print(f"build_match_engine: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
