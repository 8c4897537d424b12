"""Shared helpers of the benchmark scripts: the crops every benchmark uses, timing, JSON out."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from training.data.registry import LIVEC_DEV_ROOT

REPO = Path(__file__).resolve().parents[1]
LIVEC_IMAGES = LIVEC_DEV_ROOT / "images"


def sample_images(n: int) -> list[Path]:
    """The first n LIVEC dev photographs (real JPEG/PNG files of ~500x500)."""
    files = sorted(LIVEC_IMAGES.glob("*"))[:n]
    if len(files) < n:
        raise FileNotFoundError(f"need {n} images under {LIVEC_IMAGES}, found {len(files)}")
    return files


def crops_batch(model_cfg: dict, n_images: int = 4, grid: int = 2, dtype=np.float32,
                allow_random: bool = False) -> np.ndarray:
    """Evaluation crops of real photographs (K, 3, S, S): normalised floats, or with dtype uint8
    the raw pixels the CPU serving student takes (it normalises in-graph). allow_random: where the
    LIVEC photographs are absent (a bare GPU host), seeded random pixels instead, said on stdout;
    fine for timing and for engine-vs-ONNX parity, meaningless for scores."""
    from qfm_core.crops import channels_first, grid_crops, load_rgb, normalize

    try:
        photos = [load_rgb(p) for p in sample_images(n_images)]
    except FileNotFoundError as e:
        if not allow_random:
            raise
        print(f"note: {e}; using seeded random pixels")
        size = model_cfg["input_size"] * grid
        rng = np.random.default_rng(0)
        photos = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n_images)]
    crops = np.concatenate([grid_crops(img, model_cfg["input_size"], grid) for img in photos])
    if np.dtype(dtype) == np.uint8:
        return np.ascontiguousarray(channels_first(crops))
    return normalize(crops, model_cfg["mean"], model_cfg["std"]).astype(dtype)


def timed(fn, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}"


def write_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    obj = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M"), **obj}
    path.write_text(json.dumps(obj, indent=2))


# gpu_check.sh conventions: a step script that cannot run here (no TensorRT, no compute-sanitizer)
# exits SKIPPED after printing "skipped: <reason>"; with QFM_DRY_RUN=1 (gpu_check.sh --dry-run, run
# by `make test` on the CPU) each step script stops right after parsing its real arguments.
SKIPPED = 77
NO_TENSORRT = "no TensorRT (pip install tensorrt-cu13, or NGC's TensorRT / Triton container)"


def skip(reason: str) -> int:
    print(f"skipped: {reason}", flush=True)
    return SKIPPED


def dry_run(args, imports: tuple[str, ...] = ()) -> bool:
    """True (after saying so) when gpu_check.sh --dry-run only wants the arguments checked; the
    project modules the step uses lazily (`imports`) are imported then, so a broken import shows
    on the CPU too."""
    if os.environ.get("QFM_DRY_RUN") != "1":
        return False
    import importlib
    for name in imports:
        importlib.import_module(name)
    print(f"dry run: arguments parsed: {vars(args)}" + (f"; imported {', '.join(imports)}" if imports else ""))
    return True


class TensorRTEngine:
    """A deserialised TensorRT plan run on torch CUDA tensors: inputs bound by name, outputs
    allocated once per set of input shapes from the engine's own I/O names, shapes and types."""

    def __init__(self, trt, plan: Path):
        self.trt = trt
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialise {plan}")
        self.ctx = self.engine.create_execution_context()
        self._shapes, self._outputs = None, {}

    def run(self, **inputs) -> dict:
        """Outputs as CUDA tensors (reused between calls of the same shapes), stream synchronised."""
        import torch
        trt, eng = self.trt, self.engine
        for name, t in inputs.items():
            self.ctx.set_input_shape(name, tuple(t.shape))
            self.ctx.set_tensor_address(name, t.data_ptr())
        shapes = {name: tuple(t.shape) for name, t in inputs.items()}
        if shapes != self._shapes:
            dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int64: torch.int64,
                      trt.int32: torch.int32}
            self._outputs = {}
            for i in range(eng.num_io_tensors):
                name = eng.get_tensor_name(i)
                if eng.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                    self._outputs[name] = torch.empty(tuple(self.ctx.get_tensor_shape(name)), device="cuda",
                                                      dtype=dtypes[eng.get_tensor_dtype(name)])
                    self.ctx.set_tensor_address(name, self._outputs[name].data_ptr())
            self._shapes = shapes
        stream = torch.cuda.current_stream()
        if not self.ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("execute_async_v3 failed")
        stream.synchronize()
        return self._outputs
