r"""Build TensorRT engines from the exported ONNX student.

On a GPU host (datacenter TensorRT 10.x/11.x, what users run on H100 / A100 / L4):

    python export/build_engine.py --onnx build/qfm_student_fp16.onnx \
        --engine build/engines/qfm_student_fp16.plan --precision fp16 \
        --min-batch 1 --opt-batch 32 --max-batch 128 --timing-cache build/timing.cache

Ahead of time, on any machine including one without a GPU, through TensorRT-RTX:

    python export/build_engine.py --backend tensorrt-rtx --compute-capability 8.9 \
        --onnx build/qfm_student_fp16.onnx --engine build/engines/qfm_student_fp16_sm89.plan

Networks are strongly typed: the precision is the ONNX file's (the FP16 export has FP16 weights
and compute), and --precision must agree with it. Beside each plan: `<plan>.json` (TensorRT
version, GPU, compute capability, profiles, precision, I/O, ONNX sha256) and, where the engine
can be deserialised (a GPU is present), `<plan>.layers.json` from the engine inspector. The plan
is written to a temporary name and renamed only when complete, so Triton never loads half a file.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
import time
from pathlib import Path

from qfm_core import io_names
from training.cli import HelpFormatter
from qfm_core.files import sha256_file, write_bytes, write_json

BACKENDS = {"tensorrt": "tensorrt", "tensorrt-rtx": "tensorrt_rtx"}
INSTALL_HINT = {
    "tensorrt": "install TensorRT on a GPU host (`pip install tensorrt-cu13`, or use NGC's TensorRT/Triton "
                "containers), or build ahead of time with --backend tensorrt-rtx --compute-capability X.Y",
    "tensorrt-rtx": "`pip install tensorrt-rtx-cu13` (builds on machines without a GPU)",
}


class BuildError(RuntimeError):
    """A build that cannot go on; the message is one line a user can act on."""


def load_backend(name: str):
    try:
        return importlib.import_module(BACKENDS[name])
    except ImportError as e:
        raise BuildError(f"{name} Python package not importable ({e}); {INSTALL_HINT[name]}") from e


def cuda_device() -> dict | None:
    """Name and compute capability of GPU 0 through cuda-python, or None when there is none."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return None
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count == 0:
        return None
    err, prop = cudart.cudaGetDeviceProperties(0)
    if err != cudart.cudaError_t.cudaSuccess:
        return None
    return {"name": prop.name.decode(errors="replace").rstrip("\x00"), "compute_capability": f"{prop.major}.{prop.minor}"}


def onnx_input_precision(onnx_path: Path) -> str:
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:  # protobuf raises several types for truncated or foreign files
        raise BuildError(f"{onnx_path} is not a readable ONNX model ({type(e).__name__}: {e}); re-export it with "
                         "export/to_onnx.py") from e
    inputs = {i.name: i for i in model.graph.input}
    if io_names.CROPS not in inputs:
        raise BuildError(f"{onnx_path} has inputs {sorted(inputs)}, not the student's '{io_names.CROPS}'")
    elem = inputs[io_names.CROPS].type.tensor_type.elem_type
    return {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.FLOAT: "fp32"}.get(elem, str(elem))


def fp32_weight_nodes(onnx_path: Path) -> list[str]:
    """Nodes of the ONNX that read FP32 weight tensors: in an FP16 export, the backbone stages that
    export/to_onnx.py kept in FP32 for parity (a strongly typed engine runs them in FP32 too)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    fp32 = {t.name for t in model.graph.initializer if len(t.dims) > 1 and t.data_type == onnx.TensorProto.FLOAT}
    return [n.name for n in model.graph.node if fp32.intersection(n.input)]


class EngineBuilder:
    """Parse ONNX into a strongly typed network, then build and serialise an engine."""

    def __init__(self, backend: str, verbose: bool = False):
        self.backend = backend
        self.trt = load_backend(backend)
        trt = self.trt
        self.logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
        self.builder = trt.Builder(self.logger)
        self.network = None
        self.config = self.builder.create_builder_config()

    def create_network(self, onnx_path: Path) -> list[dict]:
        trt = self.trt
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        self.network = self.builder.create_network(flags)
        parser = trt.OnnxParser(self.network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            for e in errors:
                print(f"  parser: {e}", file=sys.stderr)
            raise BuildError(f"could not parse {onnx_path} ({len(errors)} error(s) above); check that it was "
                             "written by export/to_onnx.py and passes onnx.checker")
        io = []
        for i in range(self.network.num_inputs):
            t = self.network.get_input(i)
            io.append({"name": t.name, "mode": "input", "shape": list(t.shape), "dtype": t.dtype.name.lower()})
        for i in range(self.network.num_outputs):
            t = self.network.get_output(i)
            io.append({"name": t.name, "mode": "output", "shape": list(t.shape), "dtype": t.dtype.name.lower()})
        names = {t["name"] for t in io}
        expected = {t.name for group in io_names.student_io(size=0, dim=0) for t in group}   # names only
        if names != expected:
            raise BuildError(f"network I/O {sorted(names)} differs from the student's {sorted(expected)}")
        for t in io:
            print(f"  {t['mode']:6s} {t['name']:10s} shape={t['shape']} dtype={t['dtype']}")
        return io

    def configure(self, batches: tuple[int, int, int], input_chw: tuple, workspace_gb: float, opt_level: int,
                  compute_capability: str | None, timing_cache: Path | None) -> None:
        trt, config = self.trt, self.config
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
        config.builder_optimization_level = opt_level
        profile = self.builder.create_optimization_profile()
        profile.set_shape(io_names.CROPS, *[(b, *input_chw) for b in batches])
        config.add_optimization_profile(profile)
        if compute_capability:  # TensorRT-RTX: ahead-of-time target, no GPU needed
            config.num_compute_capabilities = 1
            config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + compute_capability.replace(".", "")), 0)
        if timing_cache is not None and self.backend == "tensorrt":  # a no-op in TensorRT-RTX
            blob = timing_cache.read_bytes() if timing_cache.exists() else b""
            config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)
        if hasattr(trt, "ProfilingVerbosity"):
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # names layers in the inspector dump

    def create_engine(self, engine_path: Path, timing_cache: Path | None) -> bytes:
        t0 = time.time()
        plan = self.builder.build_serialized_network(self.network, self.config)
        if plan is None:
            raise BuildError("TensorRT returned no engine (see its log above); try a larger --workspace-gb or "
                             "a smaller --max-batch")
        data = bytes(plan)
        write_bytes(engine_path, data)
        if timing_cache is not None and self.backend == "tensorrt":
            cache = self.config.get_timing_cache()
            write_bytes(timing_cache, bytes(cache.serialize()))
        print(f"  built {engine_path} ({len(data) / 2**20:.1f} MB) in {time.time() - t0:.1f} s")
        return data

    def inspect(self, plan: bytes) -> str | None:
        """Engine-inspector layer dump (JSON); needs a GPU to deserialise the engine."""
        trt = self.trt
        runtime = trt.Runtime(self.logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            return None
        inspector = engine.create_engine_inspector()
        return inspector.get_engine_information(trt.LayerInformationFormat.JSON)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--onnx", required=True, type=Path, help="ONNX student from export/to_onnx.py")
    ap.add_argument("--engine", required=True, type=Path, help="output plan file")
    ap.add_argument("--backend", choices=sorted(BACKENDS), default="tensorrt",
                    help="tensorrt (GPU host) or tensorrt-rtx (ahead-of-time, no GPU needed)")
    ap.add_argument("--precision", choices=("fp16", "fp32"), default="fp16",
                    help="must match the ONNX file's types: networks are strongly typed")
    ap.add_argument("--compute-capability", help="tensorrt-rtx only: target, e.g. 8.9, 8.6, 8.0, 7.5, 12.0")
    ap.add_argument("--min-batch", type=int, default=1, help="optimization profile minimum")
    ap.add_argument("--opt-batch", type=int, default=32, help="profile batch TensorRT tunes for")
    ap.add_argument("--max-batch", type=int, default=128, help="profile maximum")
    ap.add_argument("--input-size", type=int, default=224, help="crop side in pixels")
    ap.add_argument("--workspace-gb", type=float, default=4.0, help="builder workspace limit")
    ap.add_argument("--opt-level", type=int, default=3, choices=range(0, 6), metavar="{0..5}",
                    help="builder optimization level")
    ap.add_argument("--timing-cache", type=Path, help="persistent timing cache file, read and updated (tensorrt)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)
    if not 1 <= args.min_batch <= args.opt_batch <= args.max_batch:
        ap.error("need 1 <= --min-batch <= --opt-batch <= --max-batch")
    if args.backend == "tensorrt-rtx" and not args.compute_capability:
        ap.error("--backend tensorrt-rtx needs --compute-capability (e.g. 8.9): there is no GPU to ask")
    if args.backend == "tensorrt" and args.compute_capability:
        ap.error("--compute-capability is for tensorrt-rtx; datacenter TensorRT builds for the GPU it runs on")
    if not args.onnx.exists():
        ap.error(f"{args.onnx} not found: run `python export/to_onnx.py --checkpoint models/qfm_iqm --out build/` first")
    return args


def build(args) -> dict:
    onnx_precision = onnx_input_precision(args.onnx)
    if onnx_precision != args.precision:
        raise BuildError(f"--precision {args.precision} but {args.onnx.name} is {onnx_precision}: strongly typed "
                         f"networks take their precision from the ONNX (use qfm_student_{args.precision}.onnx)")
    load_backend(args.backend)  # what to install comes before what hardware is missing
    device = None
    if args.backend == "tensorrt":
        device = cuda_device()
        if device is None:
            raise BuildError("no CUDA GPU visible: --backend tensorrt builds on the GPU it targets; run this on the "
                             "GPU host, or build ahead of time with --backend tensorrt-rtx --compute-capability X.Y")
    builder = EngineBuilder(args.backend, args.verbose)
    if args.backend == "tensorrt-rtx" and not hasattr(builder.trt.ComputeCapability,
                                                      "SM" + args.compute_capability.replace(".", "")):
        targets = [m[2:-1] + "." + m[-1] for m in builder.trt.ComputeCapability.__members__ if m.startswith("SM")]
        raise BuildError(f"TensorRT-RTX {builder.trt.__version__} cannot target {args.compute_capability}; it offers {targets}")
    print(f"parsing {args.onnx} with {args.backend} {builder.trt.__version__}")
    io = builder.create_network(args.onnx)
    batches = (args.min_batch, args.opt_batch, args.max_batch)
    builder.configure(batches, (3, args.input_size, args.input_size), args.workspace_gb, args.opt_level,
                      args.compute_capability, args.timing_cache)
    plan = builder.create_engine(args.engine, args.timing_cache)
    layers = builder.inspect(plan) if device is not None else None
    if layers is not None:
        (args.engine.with_name(args.engine.name + ".layers.json")).write_text(layers)
    meta = {
        "engine": args.engine.name, "engine_sha256": hashlib.sha256(plan).hexdigest(), "bytes": len(plan),
        "backend": args.backend, "tensorrt_version": builder.trt.__version__, "precision": args.precision,
        "fp32_weight_layers": fp32_weight_nodes(args.onnx) if args.precision == "fp16" else None,
        "gpu": device["name"] if device else None,
        "compute_capability": device["compute_capability"] if device else args.compute_capability,
        "profiles": [{"input": io_names.CROPS, "min": [args.min_batch, 3, args.input_size, args.input_size],
                      "opt": [args.opt_batch, 3, args.input_size, args.input_size],
                      "max": [args.max_batch, 3, args.input_size, args.input_size]}],
        "io": io, "onnx": str(args.onnx), "onnx_sha256": sha256_file(args.onnx),
        "builder_optimization_level": args.opt_level, "workspace_gb": args.workspace_gb,
        "layer_dump": f"{args.engine.name}.layers.json" if layers is not None else
        "not written: deserialising an engine for the inspector needs a GPU",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    meta_path = args.engine.with_name(args.engine.name + ".json")
    write_json(meta_path, meta)
    return meta


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        meta = build(args)
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    print(json.dumps({k: meta[k] for k in ("engine", "backend", "tensorrt_version", "precision", "compute_capability",
                                           "profiles", "bytes")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
