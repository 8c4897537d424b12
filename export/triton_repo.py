r"""Write the Triton model repository for a deployment target from the built artifacts.

    python export/triton_repo.py --target cpu-pip --checkpoint models/qfm_iqm \
        --onnx build/qfm_student_fp32.onnx --bank build/bank.safetensors --out triton_repo
    python export/triton_repo.py --target gpu-ngc --checkpoint models/qfm_iqm \
        --plan build/engines/qfm_student_fp16.plan --bank build/bank.safetensors --out build/triton_repo_gpu

Targets (one source for all configs below):
  cpu-pip  the tritonserver binary of the nvidia-pytriton wheel (this machine): Python backend
           only, so the student and the matcher run ONNX Runtime inside Python-backend models.
  cpu-ngc  NGC's tritonserver container on a CPU host: native onnxruntime backend.
  Both CPU targets serve the FP32 ONNX behind a uint8 input (normalisation in-graph).
  gpu-ngc  NGC's container with a GPU: native tensorrt_plan backend (FP16 engine), FP16 crops;
           matching by the match engine with our CUDA kernel (--match-plan), else by the ONNX match
           model on the onnxruntime backend.

Ensemble `qfm_iqm`: IMAGE (BYTES [N]) -> qfm_preprocess -> qfm_student -> qfm_aggregate ->
qfm_match -> SCORE, EMBEDDING, NEIGHBOR_IDS, NEIGHBOR_SCORES, NEIGHBOR_DISTANCES.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from export import io_names, match_onnx, onnx_export
from export.bank import load_bank
from training.cli import HelpFormatter

REPO_SOURCES = Path(__file__).resolve().parents[1] / "triton_repo"  # committed model.py files
TARGETS = ("cpu-pip", "cpu-ngc", "gpu-ngc")
PY_MODELS = ("qfm_preprocess", "qfm_aggregate")  # Python backend on every target

# Measured choices (triton_repo/README.md): crops of concurrent requests are merged up to these.
STUDENT_BATCH = {"cpu-pip": (512, [36, 72], 1000), "cpu-ngc": (512, [36, 72], 1000), "gpu-ngc": (128, [72, 128], 1000)}


# Limits on untrusted images, enforced by qfm_preprocess (README, SECURITY).
PREPROCESS_LIMITS = {"max_image_bytes": 32 * 1024 * 1024, "max_request_bytes": 256 * 1024 * 1024,
                     "max_pixels": 50_000_000, "min_side": 16, "max_aspect": 20}


class MissingArtifact(FileNotFoundError):
    pass


def _io(kind: str, entries: list[tuple]) -> str:
    rows = []
    for e in entries:
        name, dtype, dims = e[:3]
        reshape = f" reshape: {{ shape: [ {', '.join(map(str, e[3]))} ] }}" if len(e) > 3 else ""
        rows.append(f'  {{ name: "{name}" data_type: {dtype} dims: [ {", ".join(map(str, dims))} ]{reshape} }}')
    return f"{kind} [\n" + ",\n".join(rows) + "\n]\n"


def _spec_io(kind: str, specs: list, batched: bool, reshape_scalars: bool = True) -> str:
    """Config entries for engine / ONNX tensors (io_names specs). With Triton batching the batch
    axis is implicit; a tensor that is only a batch axis (the score) is [1], reshaped to [] where
    the model's tensor really is 1-D (engines, ONNX; not the Python model's [batch, 1])."""
    entries = []
    for t in specs:
        if not batched:
            entries.append((t.name, f"TYPE_{t.dtype}", list(t.shape)))
        elif len(t.shape) == 1:
            entries.append((t.name, f"TYPE_{t.dtype}", [1], []) if reshape_scalars else
                           (t.name, f"TYPE_{t.dtype}", [1]))
        else:
            entries.append((t.name, f"TYPE_{t.dtype}", list(t.shape[1:])))
    return _io(kind, entries)


def _params(params: dict) -> str:
    return "".join(f'parameters {{ key: "{k}" value: {{ string_value: "{v}" }} }}\n' for k, v in params.items())


# Crop tensors between qfm_preprocess and qfm_student. CPU targets pass raw uint8 pixels and the
# student's ONNX normalises in-graph (onnx_export.with_uint8_input: saves the preprocess ~7 ms per
# image and 3/4 of the bytes every hop copies); the TensorRT engine takes normalised FP16.
CROP_TYPE = {"cpu-pip": "TYPE_UINT8", "cpu-ngc": "TYPE_UINT8", "gpu-ngc": "TYPE_FP16"}


def preprocess_config(target: str, grid: int, size: int) -> str:
    crop_type = CROP_TYPE[target]
    what = "raw uint8 pixels (the student normalises)" if crop_type == "TYPE_UINT8" else "normalised"
    return (f"# Encoded image bytes -> {grid}x{grid} crops of {size}x{size} per image at native resolution, {what}.\n"
            "# Not batched by Triton: one request carries N images and yields N*G*G crops.\n"
            'name: "qfm_preprocess"\nbackend: "python"\nmax_batch_size: 0\n'
            + _io("input", [("IMAGE", "TYPE_STRING", [-1])])
            + _io("output", [("CROPS", crop_type, [-1, 3, size, size]), ("CROP_COUNTS", "TYPE_INT32", [-1]),
                             ("ITEM_ERROR", "TYPE_STRING", [-1])])
            + "# Decoding is CPU-bound and single-threaded per instance: two instances use both cores.\n"
            "instance_group [ { kind: KIND_CPU count: 2 } ]\n"
            "# Untrusted bytes (training/image_guard.py): per-image limits; a request over max_request_bytes is refused.\n"
            + _params({"grid": grid, **PREPROCESS_LIMITS}))


def student_config(target: str, size: int, dim: int) -> str:
    max_batch, preferred, delay = STUDENT_BATCH[target]
    head = {"cpu-pip": 'backend: "python"\n',
            "cpu-ngc": 'platform: "onnxruntime_onnx"\ndefault_model_filename: "model.onnx"\n',
            "gpu-ngc": 'platform: "tensorrt_plan"\ndefault_model_filename: "model.plan"\n'}[target]
    inputs, outputs = io_names.student_io(size, dim, CROP_TYPE[target].removeprefix("TYPE_"))
    kind = "KIND_GPU" if target == "gpu-ngc" else "KIND_CPU"
    io = (_spec_io("input", inputs, batched=True)
          + _spec_io("output", outputs, batched=True, reshape_scalars=target != "cpu-pip"))
    text = (f"# The QFM-IQM student on {size}x{size} crops: score (0..100) and {dim}-d quality embedding per crop.\n"
            f'name: "qfm_student"\n{head}max_batch_size: {max_batch}\n' + io
            + "# Crops from concurrent requests are merged into one call (the main throughput lever).\n"
            f"dynamic_batching {{ preferred_batch_size: [ {', '.join(map(str, preferred))} ] "
            f"max_queue_delay_microseconds: {delay} }}\n"
            f"instance_group [ {{ kind: {kind} count: 1 }} ]\n")
    if target == "cpu-pip":
        text += _params({"onnx_file": "model.onnx", "intra_op_threads": 2})
    return text


def aggregate_config(dim: int) -> str:
    return ("# Mean of crop scores and crop embeddings per image.\n"
            'name: "qfm_aggregate"\nbackend: "python"\nmax_batch_size: 0\n'
            + _io("input", [("CROP_SCORES", "TYPE_FP32", [-1, 1]), ("CROP_EMBEDDINGS", "TYPE_FP32", [-1, dim]),
                            ("CROP_COUNTS", "TYPE_INT32", [-1])])
            + _io("output", [("SCORE", "TYPE_FP32", [-1]), ("EMBEDDING", "TYPE_FP32", [-1, dim])])
            + "instance_group [ { kind: KIND_CPU count: 1 } ]\n")


def match_config(target: str, dim: int, k: int, match_plan: bool = False) -> str:
    inputs, outputs = io_names.match_io(dim, k)
    if target == "cpu-pip":   # Python model: bank as a file beside it, no index output
        head, kind = 'backend: "python"\n', "KIND_CPU"
        extra = _params({"onnx_file": "match.onnx", "bank_file": "bank.safetensors"})
        io = (_io("input", [("EMBEDDING", "TYPE_FP32", [-1, dim])])
              + _spec_io("output", [t for t in outputs if t.name != io_names.NEIGHBOR_INDEX], batched=False))
    else:
        if match_plan:   # our fused distance + top-k kernels inside the engine (export/build_match_engine.py)
            head, kind = 'platform: "tensorrt_plan"\ndefault_model_filename: "model.plan"\n', "KIND_GPU"
        else:
            head = 'platform: "onnxruntime_onnx"\ndefault_model_filename: "match.onnx"\n'
            kind = "KIND_GPU" if target == "gpu-ngc" else "KIND_CPU"
        extra = ""
        # Every engine / model tensor, neighbor_index included: the TensorRT backend refuses to load an
        # engine whose I/O the config does not list in full.
        io = _spec_io("input", inputs, batched=False) + _spec_io("output", outputs, batched=False)
    return (f"# {k} nearest references of each image's quality embedding (squared L2), with their known scores.\n"
            f'name: "qfm_match"\n{head}max_batch_size: 0\n' + io
            + f"instance_group [ {{ kind: {kind} count: 1 }} ]\n" + extra)


def ensemble_config(target: str, dim: int, k: int) -> str:
    match_in = "EMBEDDING" if target == "cpu-pip" else "query"

    def step(model, inputs, outputs):
        maps = "".join(f'      input_map {{ key: "{a}" value: "{b}" }}\n' for a, b in inputs)
        maps += "".join(f'      output_map {{ key: "{a}" value: "{b}" }}\n' for a, b in outputs)
        return f'    {{\n      model_name: "{model}"\n      model_version: -1\n{maps}    }}'

    steps = [
        step("qfm_preprocess", [("IMAGE", "IMAGE")], [("CROPS", "crops"), ("CROP_COUNTS", "crop_counts"),
                                                     ("ITEM_ERROR", "ITEM_ERROR")]),
        step("qfm_student", [("image", "crops")], [("score", "crop_scores"), ("embedding", "crop_embeddings")]),
        step("qfm_aggregate", [("CROP_SCORES", "crop_scores"), ("CROP_EMBEDDINGS", "crop_embeddings"),
                               ("CROP_COUNTS", "crop_counts")], [("SCORE", "SCORE"), ("EMBEDDING", "EMBEDDING")]),
        step("qfm_match", [(match_in, "EMBEDDING")], [("neighbor_ids", "NEIGHBOR_IDS"),
                                                       ("neighbor_scores", "NEIGHBOR_SCORES"),
                                                       ("neighbor_distances", "NEIGHBOR_DISTANCES")]),
    ]
    return ("# Image bytes in, scores and nearest references out. Send N images as one IMAGE tensor [N].\n"
            "# ITEM_ERROR[i] is empty when image i was scored, else \"CODE: message\" and its other outputs are void.\n"
            'name: "qfm_iqm"\nplatform: "ensemble"\nmax_batch_size: 0\n'
            + _io("input", [("IMAGE", "TYPE_STRING", [-1])])
            + _io("output", [("SCORE", "TYPE_FP32", [-1]), ("EMBEDDING", "TYPE_FP32", [-1, dim]),
                             ("ITEM_ERROR", "TYPE_STRING", [-1]), ("NEIGHBOR_IDS", "TYPE_INT64", [-1, k]), ("NEIGHBOR_SCORES", "TYPE_FP32", [-1, k]),
                             ("NEIGHBOR_DISTANCES", "TYPE_FP32", [-1, k])])
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")


def _require(path: Path | None, what: str, how: str) -> Path:
    if path is None or not Path(path).exists():
        raise MissingArtifact(f"{what} not found ({path}); build it with: {how}")
    return Path(path)


def write_repository(target: str, checkpoint: Path, out: Path, bank: Path, onnx: Path | None = None,
                     plan: Path | None = None, k: int = 5, grid: int = 3, version: int = 1,
                     match_plan: Path | None = None) -> dict:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}")
    ckpt_cfg = _require(checkpoint / "config.json", "student checkpoint config",
                        "python training/package_model.py (or use models/qfm_iqm)")
    student = json.loads(ckpt_cfg.read_text())["student"]
    size, dim = student["input_size"], student["embed_dim"]
    bank = _require(bank, "reference bank", "python export/build_bank.py --checkpoint ... --dataset livec --out build/bank.safetensors")
    if target == "gpu-ngc":
        plan = _require(plan, "TensorRT FP16 engine", "python export/build_engine.py --onnx build/qfm_student_fp16.onnx ...")
    else:
        onnx = _require(onnx, "FP32 ONNX student", "python export/to_onnx.py --checkpoint models/qfm_iqm --out build/")
    bank_data = load_bank(bank)
    if bank_data["embeddings"].shape[1] != dim:
        raise ValueError(f"bank dim {bank_data['embeddings'].shape[1]} != student embedding dim {dim}")
    if len(bank_data["ids"]) < k:
        raise ValueError(f"bank has {len(bank_data['ids'])} entries, fewer than k={k}")

    configs = {"qfm_preprocess": preprocess_config(target, grid, size), "qfm_student": student_config(target, size, dim),
               "qfm_aggregate": aggregate_config(dim), "qfm_match": match_config(target, dim, k, match_plan is not None),
               "qfm_iqm": ensemble_config(target, dim, k)}
    out.mkdir(parents=True, exist_ok=True)
    for name, text in configs.items():
        vdir = out / name / str(version)
        vdir.mkdir(parents=True, exist_ok=True)
        (out / name / "config.pbtxt").write_text(text)
        src = REPO_SOURCES / name / "1" / "model.py"
        uses_python = name in PY_MODELS or (target == "cpu-pip" and name in ("qfm_student", "qfm_match"))
        if uses_python and src.resolve() != (vdir / "model.py").resolve():
            shutil.copyfile(src, vdir / "model.py")
    shutil.copyfile(ckpt_cfg, out / "qfm_preprocess" / str(version) / "student_config.json")
    sdir, mdir = out / "qfm_student" / str(version), out / "qfm_match" / str(version)
    if target == "gpu-ngc":
        shutil.copyfile(plan, sdir / "model.plan")
    else:
        onnx_export.with_uint8_input(onnx, sdir / "model.onnx", student["mean"], student["std"])
    if target == "cpu-pip":
        match_onnx.save(match_onnx.build_match_model(dim, k), mdir / "match.onnx")
        shutil.copyfile(bank, mdir / "bank.safetensors")
    elif match_plan is not None:
        if target != "gpu-ngc":
            raise ValueError("--match-plan is a TensorRT engine: only for --target gpu-ngc")
        shutil.copyfile(_require(match_plan, "match engine", "python export/build_match_engine.py ..."), mdir / "model.plan")
    else:
        model = match_onnx.build_match_model(dim, k, bank=bank_data["embeddings"], bank_scores=bank_data["scores"],
                                             bank_ids=bank_data["ids"])
        match_onnx.save(model, mdir / "match.onnx")
    return {"target": target, "out": str(out), "models": sorted(configs), "version": version, "k": k, "grid": grid}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--target", required=True, choices=TARGETS)
    ap.add_argument("--checkpoint", required=True, type=Path, help="student folder (its config.json drives preprocessing)")
    ap.add_argument("--bank", required=True, type=Path, help="reference bank (export/build_bank.py)")
    ap.add_argument("--onnx", type=Path, help="FP32 ONNX student (cpu-pip, cpu-ngc)")
    ap.add_argument("--plan", type=Path, help="FP16 TensorRT engine (gpu-ngc)")
    ap.add_argument("--match-plan", type=Path, help="match engine with our kernel (gpu-ngc; export/build_match_engine.py); "
                    "default: the ONNX match model on the onnxruntime backend")
    ap.add_argument("--out", required=True, type=Path, help="repository folder")
    ap.add_argument("--k", type=int, default=5, help="neighbours returned per image")
    ap.add_argument("--grid", type=int, default=3, help="n x n crops per image")
    ap.add_argument("--version", type=int, default=1, help="model version folder to write")
    args = ap.parse_args(argv)
    try:
        info = write_repository(args.target, args.checkpoint, args.out, args.bank, args.onnx, args.plan,
                                args.k, args.grid, args.version, match_plan=args.match_plan)
    except (MissingArtifact, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
