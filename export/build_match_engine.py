r"""Build the TensorRT match engine: query embeddings -> k nearest bank entries, with our fused
distance + top-k kernel inside the engine as an AOT plugin (export/match_plugin.py).

    python export/build_match_engine.py --bank build/bank.safetensors --k 5 \
        --engine build/engines/qfm_match.plan [--metric sq_l2] [--max-batch 512]

I/O (qfm_core.io_names.match_io, also the ONNX match model's and the Triton config's): `EMBEDDING`
(N, D) fp32 (the images' quality embeddings) -> `NEIGHBOR_DISTANCES` (N, k) fp32 ascending,
`NEIGHBOR_INDEX` (N, k) int64, `NEIGHBOR_SCORES` (N, k) fp32, `NEIGHBOR_IDS` (N, k) int64. Among
equal distances the lower bank index comes first; a non-finite embedding gets distances FLT_MAX
and real bank rows (never index -1).

The bank is a constant of this engine, not an input. Why: Triton's tensorrt_plan backend takes
every input from the request, and a million-row bank is 768 MB; as a constant it is uploaded once.
Replacing the bank rebuilds this engine only (seconds), never the student; with Triton's explicit
model control, `load qfm_match` swaps it while the student keeps serving.

Needs datacenter TensorRT >= 10.9 with `tensorrt.plugin`, a GPU (the kernels are compiled for the
build GPU) and a driver that loads the PTX ISA our NVRTC writes. Without any of them it stops with
one line saying which. Beside the plan, `<plan>.json` records the TensorRT, NVRTC, PTX ISA and
driver versions.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from export import match_onnx
from qfm_core import io_names
from qfm_core.bank import load_bank
from qfm_core.image_guard import RequestLimits
from export.build_engine import BuildError, cuda_device, load_backend
from export.kernels.compile import (
    K_MAX,
    KernelBuildError,
    compile_ptx,
    driver_cuda_version,
    ptx_compatibility,
)
from export.kernels.launch import split_bank
from training.cli import HelpFormatter
from qfm_core.files import sha256_file, write_bytes, write_json

SCHEDULE_SMS = 132   # the partial kernel's split count is fixed at build time, for an H100-sized GPU


def plugin_knn(trtp, k: int, splits: int, metric: str):
    """The engine's nearest-neighbour step: our two AOT plugins (partial lists, then the merge)."""
    def knn(network, query16, bank16):
        part = network.add_plugin(trtp.op.qfm.knn_partial(query16, bank16, k=k, splits=splits, metric=metric),
                                  aot=True)
        merged = network.add_plugin(trtp.op.qfm.knn_merge(part.get_output(0), part.get_output(1), k=k), aot=True)
        return merged.get_output(0), merged.get_output(1)
    return knn


def add_match_layers(trt, network, bank: dict, k: int, knn) -> list:
    """Query input, bank constants, `knn` (query16, bank16) -> (distances fp32, indices int32), the
    gathers of scores and ids, and the outputs, named and typed from io_names.match_io. Returns the
    arrays TensorRT reads at build time (keep them alive until then)."""
    emb = np.ascontiguousarray(bank["embeddings"], np.float32)
    m, dim = emb.shape
    (q_spec,), out_specs = io_names.match_io(dim, k)
    dtypes = {"FP32": trt.float32}
    query = network.add_input(q_spec.name, dtypes[q_spec.dtype], q_spec.shape)
    q16 = network.add_cast(query, trt.float16).get_output(0)
    bank16 = np.ascontiguousarray(emb.astype(np.float16))
    scores = np.ascontiguousarray(bank["scores"], np.float32)
    ids = np.ascontiguousarray(bank["ids"], np.int64)
    bank_t = network.add_constant(bank16.shape, trt.Weights(bank16)).get_output(0)
    scores_t = network.add_constant((m,), trt.Weights(scores)).get_output(0)
    ids_t = network.add_constant((m,), trt.Weights(ids)).get_output(0)
    dist, index32 = knn(network, q16, bank_t)
    # The kernels return real bank rows only (non-finite distances rank last, never index -1),
    # so these gathers stay in bounds.
    tensors = {io_names.NEIGHBOR_DISTANCES: dist,
               io_names.NEIGHBOR_INDEX: network.add_cast(index32, trt.int64).get_output(0),
               io_names.NEIGHBOR_SCORES: network.add_gather(scores_t, index32, 0).get_output(0),
               io_names.NEIGHBOR_IDS: network.add_gather(ids_t, index32, 0).get_output(0)}
    for spec in out_specs:
        t = tensors[spec.name]
        t.name = spec.name
        network.mark_output(t)
    return [bank16, scores, ids]


def build(bank_path: Path, engine_path: Path, k: int, metric: str, batches: tuple[int, int, int],
          workspace_gb: float = 2.0, verbose: bool = False) -> dict:
    bank = load_bank(bank_path)
    m, dim = bank["embeddings"].shape
    if not 1 <= k <= min(K_MAX, m):
        raise BuildError(f"k must be in 1..min({K_MAX}, bank size {m}), got {k}")
    if dim % 8:   # the kernel's 16-byte loads; every registered student has D = 384
        raise BuildError(f"embedding width {dim} is not a multiple of 8; the kernel needs D % 8 == 0")
    # What to install comes before what hardware is missing (the same order as build_engine.py).
    trt = load_backend("tensorrt")
    from export import match_plugin
    try:
        match_plugin.register()
    except match_plugin.PluginUnavailable as e:
        raise BuildError(str(e)) from e
    import tensorrt.plugin as trtp
    gpu = cuda_device()
    if gpu is None:
        raise BuildError("no CUDA GPU: the plugins' kernels are compiled for the build GPU; run on a GPU host")
    try:   # the driver JIT-compiles the plugins' PTX at build and at every engine load
        ptx = ptx_compatibility(compile_ptx(match_plugin.ptx_arch(), 2, metric), driver_cuda_version())
    except KernelBuildError as e:
        raise BuildError(str(e)) from e

    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    splits, _ = split_bank(m, batches[1], 2, sm_count=SCHEDULE_SMS)   # scheduled for the opt batch
    keep = add_match_layers(trt, network, bank, k, plugin_knn(trtp, k, splits, metric))  # noqa: F841

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    profile = builder.create_optimization_profile()
    profile.set_shape(io_names.MATCH_QUERY, *[(b, dim) for b in batches])
    config.add_optimization_profile(profile)
    t0 = time.time()
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise BuildError("TensorRT could not build the match engine (messages above)")
    write_bytes(engine_path, bytes(plan))
    info = {"tensorrt": trt.__version__, "gpu": gpu, "bank": str(bank_path), "bank_sha256": sha256_file(bank_path),
            "bank_rows": m, "dim": dim, "k": k, "metric": metric, "splits": splits, "batches": list(batches),
            "plugins": [match_plugin.PARTIAL_ID, match_plugin.MERGE_ID], "ptx_arch": match_plugin.ptx_arch(),
            # A serving host's driver must load this PTX ISA too (ptx_needs_driver_cuda).
            **ptx, "build_seconds": round(time.time() - t0, 2), "plan_sha256": sha256_file(engine_path)}
    write_json(engine_path.with_name(engine_path.name + ".json"), info)
    return info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--bank", required=True, type=Path, help="bank file from export/build_bank.py")
    ap.add_argument("--engine", required=True, type=Path, help="output plan")
    ap.add_argument("--k", type=int, default=5, help=f"neighbours per query, 1..{K_MAX}")
    ap.add_argument("--metric", choices=match_onnx.METRICS, default="sq_l2")
    ap.add_argument("--min-batch", type=int, default=1)
    ap.add_argument("--opt-batch", type=int, default=32)
    # The ensemble hands qfm_match every image of a request at once: the profile must reach the
    # request limit, or a large request fails inside TensorRT instead of being served.
    ap.add_argument("--max-batch", type=int, default=RequestLimits().max_images)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if not 1 <= args.min_batch <= args.opt_batch <= args.max_batch:
        ap.error("need 1 <= --min-batch <= --opt-batch <= --max-batch")
    try:
        info = build(args.bank, args.engine, args.k, args.metric, (args.min_batch, args.opt_batch, args.max_batch),
                     verbose=args.verbose)
    except (BuildError, FileNotFoundError, ValueError) as e:   # one line each, no traceback
        print(f"build_match_engine: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
