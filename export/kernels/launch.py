"""Launch the kernels on torch CUDA tensors through cuda-python's driver API.

    from export.kernels.launch import PairwiseTopK
    knn = PairwiseTopK()                           # GPU 0; compiles for its architecture
    dist, idx = knn.topk(queries, bank, k=8)       # fp16 (N, D), (M, D) -> (N, k) fp32, int64
    full = knn.pairwise(queries, bank, "cosine")   # (N, M) fp32

Used by training's semantic-noise matching when its tensors are on a GPU, by kernel_bench.py and
by the GPU tests. The TensorRT plugin (export/match_plugin.py) embeds the same PTX in an engine.

Contexts: every module load and launch runs with the device's primary context pushed (the one
PyTorch allocates in), whatever context the caller has current, so a launcher for cuda:1 works
from a thread whose current device is cuda:0, and tensors on another device are refused.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np

from export.kernels.compile import (
    K_MAX,
    METRICS,
    TILES,
    KernelBuildError,
    compile_ptx,
    driver_cuda_version,
    ptx_compatibility,
)

THREADS = 256
WARPS = THREADS // 32


class KernelLaunchError(RuntimeError):
    pass


def _ck(result):
    from cuda.bindings import driver
    err = result[0]
    if err != driver.CUresult.CUDA_SUCCESS:
        raise KernelLaunchError(f"CUDA driver: {err.name}")
    return result[1] if len(result) == 2 else result[1:]


def choose_tactic(n: int) -> int:
    """Tile configuration by query count (the plugin lets TensorRT time them instead)."""
    return 1 if n <= 16 else 2 if n <= 64 else 3


def split_bank(m: int, n: int, tactic: int, sm_count: int) -> tuple[int, int]:
    """(splits, rows per split): enough blocks for ~4 waves of 2 blocks per SM, each split a
    whole number of bank tiles. Also used by the plugin so both run the same schedule."""
    qt, mt = TILES[tactic]
    query_blocks = math.ceil(n / qt)
    target = max(1, (8 * sm_count) // query_blocks)
    splits = max(1, min(target, math.ceil(m / mt)))
    chunk = math.ceil(math.ceil(m / splits) / mt) * mt
    return math.ceil(m / chunk), chunk


def partial_geometry(n, m, d, k: int, splits: int, tactic: int, chunk=None) -> dict:
    """Grid, block and scalar arguments of qfm_topk_partial, for this launcher and for the TensorRT
    plugin alike. chunk: bank rows per split (default ceil(M / splits)). n, m, d may be ints or
    TensorRT symbolic shape expressions (inside the plugin's aot_impl): only expr + int and
    expr // int are used, the forms tensorrt.plugin's SymIntExpr defines."""
    qt, _ = TILES[tactic]
    chunk = (m + (splits - 1)) // splits if chunk is None else chunk
    return {"grid": (splits, (n + (qt - 1)) // qt), "block": THREADS, "shared_mem": 0,
            "scalars": (n, m, d, k, chunk)}


def merge_geometry(n, length, k: int) -> dict:
    """Grid, block and scalars of qfm_topk_merge: one warp per query, WARPS queries per block."""
    return {"grid": ((n + (WARPS - 1)) // WARPS, 1), "block": THREADS, "shared_mem": 0, "scalars": (n, length, k)}


class PairwiseTopK:
    def __init__(self, device: int = 0):
        import torch
        if not torch.cuda.is_available():
            raise KernelLaunchError("no CUDA GPU visible: use training.qfm.matching's CPU path")
        from cuda.bindings import driver
        self.torch, self.driver, self.device = torch, driver, torch.device("cuda", device)
        torch.empty(1, device=self.device)           # makes torch create the device's primary context
        _ck(driver.cuInit(0))
        self.context = _ck(driver.cuDevicePrimaryCtxRetain(_ck(driver.cuDeviceGet(self.device.index))))
        props = torch.cuda.get_device_properties(self.device)
        self.arch = f"sm_{props.major}{props.minor}"
        self.sm_count = props.multi_processor_count
        try:   # refuse here, not as CUDA_ERROR_UNSUPPORTED_PTX_VERSION at the first launch
            self.ptx_info = ptx_compatibility(compile_ptx(self.arch), driver_cuda_version())
        except KernelBuildError as e:
            raise KernelLaunchError(str(e)) from e
        self._functions: dict[tuple[int, str], dict] = {}

    @contextlib.contextmanager
    def _in_device_context(self):
        _ck(self.driver.cuCtxPushCurrent(self.context))
        try:
            yield
        finally:
            _ck(self.driver.cuCtxPopCurrent())

    def _kernels(self, tactic: int, metric: str) -> dict:
        key = (tactic, metric)
        if key not in self._functions:
            ptx = compile_ptx(self.arch, tactic, metric)
            with self._in_device_context():
                module = _ck(self.driver.cuModuleLoadData(ptx + b"\x00"))
                self._functions[key] = {name: _ck(self.driver.cuModuleGetFunction(module, name.encode()))
                                        for name in ("qfm_pairwise_dist", "qfm_topk_partial", "qfm_topk_merge")}
        return self._functions[key]

    def _launch(self, func, grid: tuple[int, int], args: list) -> None:
        torch = self.torch
        for a in args:
            if isinstance(a, torch.Tensor) and a.device != self.device:
                raise ValueError(f"tensor on {a.device}, but this launcher runs on {self.device}")
        holders = []
        for a in args:   # each parameter lives in its own buffer; the launch reads their addresses
            if isinstance(a, torch.Tensor):
                holders.append(np.array([a.data_ptr()], dtype=np.uint64))
            else:
                holders.append(np.array([a], dtype=np.int32))
        params = np.array([h.ctypes.data for h in holders], dtype=np.uint64)
        stream = self.driver.CUstream(torch.cuda.current_stream(self.device).cuda_stream)
        with self._in_device_context():
            _ck(self.driver.cuLaunchKernel(func, grid[0], grid[1], 1, THREADS, 1, 1, 0, stream, params.ctypes.data, 0))

    def _prepare(self, q, b):
        torch = self.torch
        if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[1]:
            raise ValueError(f"expected (N, D) and (M, D), got {tuple(q.shape)} and {tuple(b.shape)}")
        q = q.to(self.device, torch.float16).contiguous()
        b = b.to(self.device, torch.float16).contiguous()
        extra = (-q.shape[1]) % 8                     # 16-byte vector loads need D % 8 == 0
        if extra:
            q = torch.nn.functional.pad(q, (0, extra))
            b = torch.nn.functional.pad(b, (0, extra))
        return q, b

    def pairwise(self, q, b, metric: str = "sq_l2", tactic: int | None = None, out=None):
        q, b = self._prepare(q, b)
        n, m, d = q.shape[0], b.shape[0], q.shape[1]
        tactic = tactic or choose_tactic(n)
        qt, mt = TILES[tactic]
        out = out if out is not None else self.torch.empty((n, m), device=self.device, dtype=self.torch.float32)
        self._launch(self._kernels(tactic, metric)["qfm_pairwise_dist"], (math.ceil(m / mt), math.ceil(n / qt)),
                     [q, b, n, m, d, out])
        return out

    def topk(self, q, b, k: int, metric: str = "sq_l2", tactic: int | None = None, splits: int | None = None,
             out=None):
        """(distances (N, k) fp32 ascending, indices (N, k) int64); `out` = preallocated
        (distances fp32, indices int32) to write into (the tests poison them first)."""
        torch = self.torch
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}")
        q, b = self._prepare(q, b)
        n, m, d = q.shape[0], b.shape[0], q.shape[1]
        if not 1 <= k <= min(K_MAX, m):
            raise ValueError(f"k must be in 1..min({K_MAX}, M={m}), got {k}")
        tactic = tactic or choose_tactic(n)
        chunk = None
        if splits is None:
            splits, chunk = split_bank(m, n, tactic, self.sm_count)
        kern = self._kernels(tactic, metric)
        part_d = torch.empty((n, splits * k), device=self.device, dtype=torch.float32)
        part_i = torch.empty((n, splits * k), device=self.device, dtype=torch.int32)
        geo = partial_geometry(n, m, d, k, splits, tactic, chunk)
        self._launch(kern["qfm_topk_partial"], geo["grid"], [q, b, *geo["scalars"], part_d, part_i])
        out_d, out_i = out if out is not None else (torch.empty((n, k), device=self.device, dtype=torch.float32),
                                                    torch.empty((n, k), device=self.device, dtype=torch.int32))
        geo = merge_geometry(n, splits * k, k)
        self._launch(kern["qfm_topk_merge"], geo["grid"], [part_d, part_i, *geo["scalars"], out_d, out_i])
        return out_d, out_i.long()
