"""Our distance + top-k kernels as TensorRT ahead-of-time plugins (`tensorrt.plugin`).

Two plugins, one kernel each (AOT plugins launch exactly one kernel):

  qfm::knn_partial  query (N, D) fp16, bank (M, D) fp16 -> for each of `splits` slices of the
                    bank, the k nearest rows per query: distances (N, splits*k) fp32, indices
                    (N, splits*k) int32. The N x M distance matrix never exists in memory.
  qfm::knn_merge    those candidates -> the final (N, k) distances and indices, with the kernel's
                    tie order (lower bank index first). TensorRT's own TopK does not define an
                    order among equal values, so it is not used for this step.

`aot_impl` returns the PTX of our kernels (export/kernels/pairwise_topk.cu, compiled by NVRTC for
the build GPU) with the launch geometry as symbolic expressions of the input shapes, so the
kernels are serialised into the engine: Triton's TensorRT backend runs them with no plugin library
and no Python. `autotune` offers the three tile configurations of the partial kernel as tactics
and TensorRT times them.

Calling convention of AOT plugins (TensorRT's quickly-deployable-plugin samples): the kernel's
parameters are the input pointers, then the extra int32 scalars, then the output pointers; that
is qfm_topk_partial(query, bank, N, M, D, k, chunk, out_distances, out_indices) and
qfm_topk_merge(in_distances, in_indices, N, L, k, out_distances, out_indices). CI reads the
parameter lists back from the PTX and runs these functions through TensorRT's real
`tensorrt.plugin` package (tests/test_match_plugin_layer.py).

Needs datacenter TensorRT >= 10.9 (`tensorrt.plugin` with `aot_impl`); TensorRT-RTX has no
quickly-deployable plugins.

No `from __future__ import annotations` here: tensorrt.plugin validates the decorated functions'
annotations with inspect.signature and issubclass, which string annotations fail.
"""
import os
from typing import List, Tuple, Union

from export.kernels.compile import METRICS, TILES, compile_ptx
from export.kernels.launch import merge_geometry, partial_geometry

PARTIAL_ID = "qfm::knn_partial"
MERGE_ID = "qfm::knn_merge"
MIN_TENSORRT = (10, 9)   # first release with tensorrt.plugin.aot_impl and add_plugin(..., aot=True)
DEFAULT_TACTIC = 2       # tactic 0 is TensorRT's "default" before tuning: the middle tile then


class PluginUnavailable(RuntimeError):
    """This TensorRT cannot carry our kernels; the message is one line a user can act on."""


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for p in str(text).split(".")[:2]:
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def require_aot_support(trt) -> None:
    """Refuse, in one line, a TensorRT that cannot embed AOT plugins (< 10.9, or a build without
    tensorrt.plugin)."""
    version = getattr(trt, "__version__", "unknown")
    need = ".".join(map(str, MIN_TENSORRT))
    hint = (f"the match engine embeds our kernel as an ahead-of-time plugin, which needs TensorRT >= {need}: "
            f"upgrade TensorRT (pip install 'tensorrt-cu13>={need}'), or serve the ONNX match model "
            "(leave out --match-plan)")
    if _version(version) < MIN_TENSORRT:
        raise PluginUnavailable(f"TensorRT {version}: {hint}")
    try:
        import tensorrt.plugin as trtp
    except ImportError as e:
        raise PluginUnavailable(f"TensorRT {version} has no tensorrt.plugin ({e}); {hint}") from e
    if not hasattr(trtp, "aot_impl") or not hasattr(trtp, "KernelLaunchParams"):
        raise PluginUnavailable(f"TensorRT {version}'s tensorrt.plugin has no aot_impl; {hint}")


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


def registered() -> bool:
    import tensorrt.plugin as trtp
    try:
        return hasattr(trtp.op.qfm, "knn_partial") and hasattr(trtp.op.qfm, "knn_merge")
    except AttributeError:   # no qfm namespace yet
        return False


def _launch_params(trtp, geo: dict):
    launch = trtp.KernelLaunchParams()
    launch.grid_x, launch.grid_y = geo["grid"]
    launch.block_x = geo["block"]
    launch.shared_mem = geo["shared_mem"]    # all shared memory is static (< 48 KiB)
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(v) for v in geo["scalars"]])
    return launch, extra


def register() -> None:
    """Define both plugins in TensorRT's registry (idempotent)."""
    import numpy.typing  # noqa: F401  tensorrt.plugin reads np.typing.NDArray without importing it
    import tensorrt as trt
    require_aot_support(trt)
    import tensorrt.plugin as trtp

    if registered():
        return

    @trtp.register(PARTIAL_ID)
    def knn_partial_desc(query: trtp.TensorDesc, bank: trtp.TensorDesc, k: int, splits: int,
                         metric: str) -> Tuple[trtp.TensorDesc, trtp.TensorDesc]:
        n = query.shape_expr[0]
        return (trtp.from_shape_expr((n, splits * k), dtype=trt.float32),
                trtp.from_shape_expr((n, splits * k), dtype=trt.int32))

    @trtp.autotune(PARTIAL_ID)
    def knn_partial_autotune(query: trtp.TensorDesc, bank: trtp.TensorDesc,
                             outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        c = trtp.AutoTuneCombination()
        c.pos([0, 1], "FP16")      # positions: inputs 0, 1 then outputs 2, 3; always iterables
        c.pos([2], "FP32")
        c.pos([3], "INT32")
        c.tactics(sorted(TILES))
        return [c]

    @trtp.aot_impl(PARTIAL_ID)
    def knn_partial_aot_impl(query: trtp.TensorDesc, bank: trtp.TensorDesc, k: int, splits: int, metric: str,
                             outputs: Tuple[trtp.TensorDesc], tactic: int
                             ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}")
        tactic = tactic if tactic in TILES else DEFAULT_TACTIC
        geo = partial_geometry(query.shape_expr[0], bank.shape_expr[0], query.shape_expr[1], k, splits, tactic)
        launch, extra = _launch_params(trtp, geo)
        return "qfm_topk_partial", compile_ptx(ptx_arch(), tactic, metric), launch, extra

    @trtp.register(MERGE_ID)
    def knn_merge_desc(distances: trtp.TensorDesc, indices: trtp.TensorDesc,
                       k: int) -> Tuple[trtp.TensorDesc, trtp.TensorDesc]:
        n = distances.shape_expr[0]
        return (trtp.from_shape_expr((n, k), dtype=trt.float32), trtp.from_shape_expr((n, k), dtype=trt.int32))

    @trtp.autotune(MERGE_ID)
    def knn_merge_autotune(distances: trtp.TensorDesc, indices: trtp.TensorDesc,
                           outputs: Tuple[trtp.TensorDesc]) -> List[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination("FP32, INT32, FP32, INT32", "LINEAR")]

    @trtp.aot_impl(MERGE_ID)
    def knn_merge_aot_impl(distances: trtp.TensorDesc, indices: trtp.TensorDesc, k: int,
                           outputs: Tuple[trtp.TensorDesc], tactic: int
                           ) -> Tuple[Union[str, bytes], Union[str, bytes], trtp.KernelLaunchParams, trtp.SymExprs]:
        geo = merge_geometry(distances.shape_expr[0], distances.shape_expr[1], k)
        launch, extra = _launch_params(trtp, geo)
        # The merge kernel is the same in every tile / metric variant of the module.
        return "qfm_topk_merge", compile_ptx(ptx_arch(), DEFAULT_TACTIC, "sq_l2"), launch, extra
