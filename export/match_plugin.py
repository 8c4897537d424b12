"""Our fused distance + top-k kernel as a TensorRT ahead-of-time plugin (`tensorrt.plugin`).

The plugin `qfm::knn_partial` takes query embeddings (N, D) fp16 and the bank (M, D) fp16 and
returns, for each of `splits` slices of the bank, the k nearest bank rows per query:
distances (N, splits*k) fp32 and bank indices (N, splits*k) int32. The engine finishes with
TensorRT's own TopK over those few candidates (build_match_engine.py). The N x M distance matrix
never exists in memory.

`aot_impl` returns the PTX of our kernel (export/kernels/pairwise_topk.cu, compiled by NVRTC for
the build GPU) with its launch geometry as symbolic expressions of the input shapes, so the kernel
is serialised into the engine: Triton's TensorRT backend runs it with no plugin library and no
Python. `autotune` offers the three tile configurations as tactics and TensorRT times them.

Calling convention of AOT plugins (TensorRT's quickly-deployable-plugin samples): the kernel's
parameters are the input pointers, then the extra int32 scalars, then the output pointers; that
is qfm_topk_partial(query, bank, N, M, D, k, chunk, out_distances, out_indices). A CI test reads
the parameter list back from the PTX.

Importing this module registers the plugin; it needs datacenter TensorRT (10.x/11.x with
`tensorrt.plugin`). TensorRT-RTX has no quickly-deployable plugins.
"""
from __future__ import annotations

import os
from typing import List, Tuple, Union

from export.kernels.compile import METRICS, TILES, compile_ptx

PLUGIN_ID = "qfm::knn_partial"
THREADS = 256


def ptx_arch() -> str:
    """The architecture to compile for: QFM_PTX_ARCH, else GPU 0's (the build GPU), else sm_80
    (PTX for sm_80 is JIT-compiled by the driver on any newer GPU)."""
    if os.environ.get("QFM_PTX_ARCH"):
        return os.environ["QFM_PTX_ARCH"]
    try:
        from cuda.bindings import runtime as cudart
        err, prop = cudart.cudaGetDeviceProperties(0)
        if err == cudart.cudaError_t.cudaSuccess:
            return f"sm_{prop.major}{prop.minor}"
    except ImportError:
        pass
    return "sm_80"


def launch_geometry(n, m, d, k: int, splits: int, tactic: int) -> dict:
    """Grid, block and scalar arguments of qfm_topk_partial. n, m, d may be ints (tests, the
    launcher) or TensorRT symbolic shape expressions (inside aot_impl): only +, *, // are used."""
    qt, _ = TILES[tactic]
    chunk = (m + splits - 1) // splits
    return {"grid": (splits, (n + qt - 1) // qt), "block": THREADS, "shared_mem": 0,
            "scalars": (n, m, d, k, chunk)}


def register() -> None:
    """Define the plugin in TensorRT's registry (idempotent)."""

    import tensorrt as trt
    import tensorrt.plugin as trtp

    if getattr(register, "done", False):
        return

    @trtp.register(PLUGIN_ID)
    def knn_partial_desc(query: trtp.TensorDesc, bank: trtp.TensorDesc, k: int, splits: int,
                         metric: str) -> Tuple[trtp.TensorDesc, trtp.TensorDesc]:
        n = query.shape_expr[0]
        return (trtp.from_shape_expr((n, splits * k), dtype=trt.float32),
                trtp.from_shape_expr((n, splits * k), dtype=trt.int32))

    @trtp.autotune(PLUGIN_ID)
    def knn_partial_autotune(query: trtp.TensorDesc, bank: trtp.TensorDesc,
                             outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        c = trtp.AutoTuneCombination()
        c.pos([0, 1], "FP16")
        c.pos(2, "FP32")
        c.pos(3, "INT32")
        c.tactics(sorted(TILES))
        return [c]

    @trtp.aot_impl(PLUGIN_ID)
    def knn_partial_aot_impl(query: trtp.TensorDesc, bank: trtp.TensorDesc, k: int, splits: int, metric: str,
                             outputs: Tuple[trtp.TensorDesc], tactic: int
                             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}")
        tactic = tactic if tactic in TILES else 2   # tactic 0 = TensorRT's default before tuning
        geo = launch_geometry(query.shape_expr[0], bank.shape_expr[0], query.shape_expr[1], k, splits, tactic)
        launch = trtp.KernelLaunchParams()
        launch.grid_x, launch.grid_y = geo["grid"]
        launch.block_x = geo["block"]
        launch.shared_mem = geo["shared_mem"]    # all shared memory is static (< 48 KiB)
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(v) for v in geo["scalars"]])
        return "qfm_topk_partial", compile_ptx(ptx_arch(), tactic, metric), launch, extra

    register.done = True
