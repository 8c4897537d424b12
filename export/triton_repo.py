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

Ensemble `qfm_iqm`: IMAGE (BYTES [N]) -> qfm_score (decode, crop, qfm_student in chunks, mean)
-> qfm_match -> SCORE, EMBEDDING, ITEM_ERROR, NEIGHBOR_IDS, NEIGHBOR_SCORES, NEIGHBOR_DISTANCES.

The crop plan comes from the checkpoint's config.json and the bank must have been built by that
student with that plan: another bank is refused here, and again by qfm_match when it loads.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from export import match_onnx, uint8_front
from qfm_core import io_names
from qfm_core.bank import BankMismatch, check_identity, load_bank
from qfm_core.crop_plan import read_plan
from qfm_core.files import sha256_file, write_json
from qfm_core.image_guard import Limits, RequestLimits
from training.cli import HelpFormatter

REPO_SOURCES = Path(__file__).resolve().parents[1] / "triton_repo"  # committed model.py files
TARGETS = ("cpu-pip", "cpu-ngc", "gpu-ngc")
IDENTITY_FILE = "student_identity.json"   # the served student's weights hash and crop plan

# Measured choices (triton_repo/README.md): crops of concurrent requests are merged up to these.
# max_batch_size is also the chunk qfm_score sends, so no caller ever meets it.
STUDENT_BATCH = {"cpu-pip": (512, [36, 72], 1000), "cpu-ngc": (512, [36, 72], 1000), "gpu-ngc": (128, [72, 128], 1000)}

# qfm_score instances. With 2 (one per core here) the student saw at most two requests at once and
# the dynamic batcher merged less (tests/test_serving.py's batching test failed in 1 of 6 runs);
# 4 on this 2-core machine. The GPU figure is a guess for a 16-core host, never measured.
SCORE_INSTANCES = {"cpu-pip": 4, "cpu-ngc": 4, "gpu-ngc": 8}

# Crop tensors between qfm_score and qfm_student. CPU targets pass raw uint8 pixels and the
# student's ONNX normalises in-graph (uint8_front.with_uint8_input: saves ~7 ms per image of
# NumPy and 3/4 of the bytes every hop copies); the TensorRT engine takes normalised FP16.
CROP_DTYPE = {"cpu-pip": "UINT8", "cpu-ngc": "UINT8", "gpu-ngc": "FP16"}


def score_params(target: str) -> dict:
    """qfm_score's parameters: crop type and chunking, and the limits on untrusted input
    (README, SECURITY), from their one definition in qfm_core.image_guard."""
    image, request = Limits(), RequestLimits()
    return {"crop_dtype": CROP_DTYPE[target], "chunk_crops": STUDENT_BATCH[target][0], "chunks_in_flight": 2,
            "max_images_per_request": request.max_images, "max_request_bytes": request.max_bytes,
            "max_image_bytes": image.max_bytes, "max_pixels": image.max_pixels, "min_side": image.min_side,
            "max_aspect": image.max_aspect}


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


def score_config(target: str, plan, dim: int) -> str:
    inputs, outputs = io_names.score_io(dim)
    return (f"# Encoded image bytes -> score and {dim}-d quality embedding per image: {plan.grid}x{plan.grid} crops of "
            f"{plan.size}x{plan.size} at native resolution,\n# scored by {io_names.STUDENT_MODEL} in chunks of at "
            f"most chunk_crops; up to max_images_per_request images per request.\n"
            f'name: "{io_names.SCORE_MODEL}"\nbackend: "python"\nmax_batch_size: 0\n'
            + _spec_io("input", inputs, batched=False) + _spec_io("output", outputs, batched=False)
            + "# An instance decodes one request at a time and then awaits the student's answers: more instances\n"
            "# than cores keep the cores decoding and give the student's batcher concurrent chunks to merge.\n"
            f"instance_group [ {{ kind: KIND_CPU count: {SCORE_INSTANCES[target]} }} ]\n"
            "# Untrusted bytes (core/qfm_core/image_guard.py): per-image limits; a request over the request limits is refused.\n"
            + _params(score_params(target)))


def student_config(target: str, size: int, dim: int) -> str:
    max_batch, preferred, delay = STUDENT_BATCH[target]
    head = {"cpu-pip": 'backend: "python"\n',
            "cpu-ngc": 'platform: "onnxruntime_onnx"\ndefault_model_filename: "model.onnx"\n',
            "gpu-ngc": 'platform: "tensorrt_plan"\ndefault_model_filename: "model.plan"\n'}[target]
    inputs, outputs = io_names.student_io(size, dim, CROP_DTYPE[target])
    kind = "KIND_GPU" if target == "gpu-ngc" else "KIND_CPU"
    io = (_spec_io("input", inputs, batched=True)
          + _spec_io("output", outputs, batched=True, reshape_scalars=target != "cpu-pip"))
    text = (f"# The QFM-IQM student on {size}x{size} crops: score (0..100) and {dim}-d quality embedding per crop.\n"
            f'name: "{io_names.STUDENT_MODEL}"\n{head}max_batch_size: {max_batch}\n' + io
            + "# Crops from concurrent requests are merged into one call (the main throughput lever).\n"
            f"dynamic_batching {{ preferred_batch_size: [ {', '.join(map(str, preferred))} ] "
            f"max_queue_delay_microseconds: {delay} }}\n"
            f"instance_group [ {{ kind: {kind} count: 1 }} ]\n")
    if target == "cpu-pip":
        text += _params({"onnx_file": "model.onnx", "intra_op_threads": 2})
    return text


def match_config(target: str, dim: int, k: int, match_plan: bool = False) -> str:
    inputs, outputs = io_names.match_io(dim, k)
    if target == "cpu-pip":   # Python model: bank as a file beside it, no index output
        head, kind = 'backend: "python"\n', "KIND_CPU"
        extra = _params({"onnx_file": "match.onnx", "bank_file": "bank.safetensors"})
        outputs = [t for t in outputs if t.name != io_names.NEIGHBOR_INDEX]
    else:
        if match_plan:   # our fused distance + top-k kernels inside the engine (export/build_match_engine.py)
            head, kind = 'platform: "tensorrt_plan"\ndefault_model_filename: "model.plan"\n', "KIND_GPU"
        else:
            head = 'platform: "onnxruntime_onnx"\ndefault_model_filename: "match.onnx"\n'
            kind = "KIND_GPU" if target == "gpu-ngc" else "KIND_CPU"
        # Every engine / model tensor, NEIGHBOR_INDEX included: the TensorRT backend refuses to load
        # an engine whose I/O the config does not list in full.
        extra = ""
    return (f"# {k} nearest references of each image's quality embedding (squared L2), with their known scores.\n"
            f'name: "{io_names.MATCH_MODEL}"\n{head}max_batch_size: 0\n'
            + _spec_io("input", inputs, batched=False) + _spec_io("output", outputs, batched=False)
            + f"instance_group [ {{ kind: {kind} count: 1 }} ]\n" + extra)


def ensemble_config(dim: int, k: int) -> str:
    """Two steps; every tensor keeps its name from the model that makes it, so the maps are identities."""
    def step(model, inputs, outputs):
        maps = "".join(f'      input_map {{ key: "{a}" value: "{a}" }}\n' for a in inputs)
        maps += "".join(f'      output_map {{ key: "{a}" value: "{a}" }}\n' for a in outputs)
        return f'    {{\n      model_name: "{model}"\n      model_version: -1\n{maps}    }}'

    steps = [step(io_names.SCORE_MODEL, [io_names.IMAGE], io_names.SCORE_OUTPUTS),
             step(io_names.MATCH_MODEL, [io_names.MATCH_QUERY], io_names.NEIGHBOR_OUTPUTS)]
    inputs, outputs = io_names.ensemble_io(dim, k)
    limit = RequestLimits().max_images
    return (f"# Image bytes in, scores and nearest references out. Send N <= {limit} images as one {io_names.IMAGE} tensor [N].\n"
            f"# {io_names.ITEM_ERROR}[i] is empty when image i was scored, else \"CODE: message\" and its other outputs are void.\n"
            f'name: "{io_names.ENSEMBLE}"\nplatform: "ensemble"\nmax_batch_size: 0\n'
            + _spec_io("input", inputs, batched=False) + _spec_io("output", outputs, batched=False)
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")


def _require(path: Path | None, what: str, how: str) -> Path:
    if path is None or not Path(path).exists():
        raise MissingArtifact(f"{what} not found ({path}); build it with: {how}")
    return Path(path)


def write_repository(target: str, checkpoint: Path, out: Path, bank: Path, onnx: Path | None = None,
                     plan: Path | None = None, k: int = 5, version: int = 1,
                     match_plan: Path | None = None) -> dict:
    """Write every model of `target` into `out`; raises MissingArtifact, CropPlanError or
    BankMismatch (ValueErrors) with the command that fixes it."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}")
    ckpt_cfg = _require(checkpoint / "config.json", "student checkpoint config",
                        "python training/package_model.py (or use models/qfm_iqm)")
    weights = _require(checkpoint / "model.safetensors", "student weights", "python training/package_model.py")
    student = json.loads(ckpt_cfg.read_text())["student"]
    crop_plan = read_plan(ckpt_cfg)
    size, dim = crop_plan.size, student["embed_dim"]
    bank = _require(bank, "reference bank", "python export/build_bank.py --checkpoint ... --dataset livec --out build/bank.safetensors")
    if target == "gpu-ngc":
        plan = _require(plan, "TensorRT FP16 engine", "python export/build_engine.py --onnx build/qfm_student_fp16.onnx ...")
    else:
        onnx = _require(onnx, "FP32 ONNX student", "python export/to_onnx.py --checkpoint models/qfm_iqm --out build/")
    if match_plan is not None and target != "gpu-ngc":
        raise ValueError("--match-plan is a TensorRT engine: only for --target gpu-ngc")
    bank_data = load_bank(bank)
    identity = {"student_sha256": sha256_file(weights), "crop_plan": crop_plan.to_dict(), "checkpoint": str(checkpoint)}
    check_identity(bank_data, identity["student_sha256"], crop_plan, f"repository {out} ({checkpoint})")
    if bank_data["embeddings"].shape[1] != dim:
        raise ValueError(f"bank dim {bank_data['embeddings'].shape[1]} != student embedding dim {dim}")
    if len(bank_data["ids"]) < k:
        raise ValueError(f"bank has {len(bank_data['ids'])} entries, fewer than k={k}")
    if match_plan is not None:
        match_plan = _require(match_plan, "match engine", "python export/build_match_engine.py ...")
        built = Path(str(match_plan) + ".json")
        engine_bank = json.loads(built.read_text()).get("bank_sha256") if built.exists() else None
        if engine_bank != sha256_file(bank):
            raise BankMismatch(f"match engine {match_plan} was built from bank {engine_bank or 'unrecorded'} "
                               f"({built.name}), not from {bank}: rebuild it with export/build_match_engine.py --bank {bank}")

    configs = {io_names.SCORE_MODEL: score_config(target, crop_plan, dim),
               io_names.STUDENT_MODEL: student_config(target, size, dim),
               io_names.MATCH_MODEL: match_config(target, dim, k, match_plan is not None),
               io_names.ENSEMBLE: ensemble_config(dim, k)}
    python_models = {io_names.SCORE_MODEL} | ({io_names.STUDENT_MODEL, io_names.MATCH_MODEL} if target == "cpu-pip" else set())
    out.mkdir(parents=True, exist_ok=True)
    for name, text in configs.items():
        vdir = out / name / str(version)
        vdir.mkdir(parents=True, exist_ok=True)
        (out / name / "config.pbtxt").write_text(text)
        src = REPO_SOURCES / name / "1" / "model.py"
        if name in python_models and src.resolve() != (vdir / "model.py").resolve():
            shutil.copyfile(src, vdir / "model.py")
    write_json(out / io_names.SCORE_MODEL / str(version) / IDENTITY_FILE, identity)
    sdir, mdir = out / io_names.STUDENT_MODEL / str(version), out / io_names.MATCH_MODEL / str(version)
    if target == "gpu-ngc":
        shutil.copyfile(plan, sdir / "model.plan")
    else:
        uint8_front.with_uint8_input(onnx, sdir / "model.onnx", crop_plan.mean, crop_plan.std)
    if target == "cpu-pip":
        match_onnx.save(match_onnx.build_match_model(dim, k), mdir / "match.onnx")
        shutil.copyfile(bank, mdir / "bank.safetensors")
        write_json(mdir / IDENTITY_FILE, identity)   # qfm_match checks the bank against it on load
    elif match_plan is not None:
        shutil.copyfile(match_plan, mdir / "model.plan")
    else:
        model = match_onnx.build_match_model(dim, k, bank=bank_data["embeddings"], bank_scores=bank_data["scores"],
                                             bank_ids=bank_data["ids"])
        match_onnx.save(model, mdir / "match.onnx")
    return {"target": target, "out": str(out), "models": sorted(configs), "version": version, "k": k,
            "crop_plan": crop_plan.describe(), "student_sha256": identity["student_sha256"]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--target", required=True, choices=TARGETS)
    ap.add_argument("--checkpoint", required=True, type=Path, help="student folder (its config.json holds the crop plan the server applies)")
    ap.add_argument("--bank", required=True, type=Path, help="reference bank (export/build_bank.py)")
    ap.add_argument("--onnx", type=Path, help="FP32 ONNX student (cpu-pip, cpu-ngc)")
    ap.add_argument("--plan", type=Path, help="FP16 TensorRT engine (gpu-ngc)")
    ap.add_argument("--match-plan", type=Path, help="match engine with our kernel (gpu-ngc; export/build_match_engine.py); "
                    "default: the ONNX match model on the onnxruntime backend")
    ap.add_argument("--out", required=True, type=Path, help="repository folder")
    ap.add_argument("--k", type=int, default=5, help="neighbours returned per image")
    ap.add_argument("--version", type=int, default=1, help="model version folder to write")
    args = ap.parse_args(argv)
    try:
        info = write_repository(args.target, args.checkpoint, args.out, args.bank, args.onnx, args.plan,
                                args.k, args.version, match_plan=args.match_plan)
    except (MissingArtifact, ValueError) as e:   # CropPlanError and BankMismatch are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
