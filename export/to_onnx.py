"""Export a student checkpoint to ONNX (FP32 and FP16) and print the parity report.

    python export/to_onnx.py --checkpoint models/qfm_iqm --out build/

Writes build/qfm_student_fp32.onnx, build/qfm_student_fp16.onnx and build/onnx_report.json.
Both have input `CROPS` (batch, 3, S, S) with a dynamic `batch` axis (FP32 input in the FP32
model, FP16 in the FP16 model) and FP32 outputs `CROP_SCORES` (batch,) and `CROP_EMBEDDINGS` (batch, D)
(names: qfm_core.io_names).
Parity: ONNX Runtime vs PyTorch on crops of held-out synthetic-benchmark images.

FP16 precision: with `--fp32-stages auto` (the default) the FP16 model is all-FP16 when that meets
the parity limits; otherwise the first backbone stages (stem, blocks.0, ...) stay FP32, as few as
pass, and the report's `fp16_precision` names them. Why those: a quality model reads faint
high-frequency signal, and FP16 rounding of the full-resolution early activations looks like it.
`--fp32-stages N` fixes the count instead.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import onnx

from export import onnx_export, parity
from training.checkpoint import load_student
from training.cli import HelpFormatter
from qfm_core.files import sha256_file, write_json

# Acceptance limits on the 0..100 score scale (issue #4).
FP32_MAX_DIFF, FP16_MAX_DIFF, FP16_MIN_SRCC = 1e-3, 0.5, 0.999


def _fp16_ok(p: dict) -> bool:
    return p["max_abs_score_diff"] <= FP16_MAX_DIFF and p["srcc_vs_reference"] >= FP16_MIN_SRCC


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path, help="student folder (model.safetensors + config.json)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--opset", type=int, default=onnx_export.DEFAULT_OPSET)
    ap.add_argument("--no-slim", action="store_true", help="skip the onnxslim cleanup")
    ap.add_argument("--parity-images", type=int, default=24,
                    help="held-out images whose crops are compared (and on which --fp32-stages auto "
                         "chooses: fewer images, weaker evidence)")
    ap.add_argument("--fp32-stages", default="auto",
                    help="leading backbone stages kept FP32 in the FP16 model: a number, or 'auto' for "
                         "the fewest that meet the FP16 parity limits")
    args = ap.parse_args(argv)
    if args.fp32_stages != "auto" and not args.fp32_stages.isdigit():
        ap.error(f"--fp32-stages must be a number or 'auto', got {args.fp32_stages!r}")
    try:
        model = load_student(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n_stages = onnx_export.stage_count(model)
    if args.fp32_stages != "auto" and int(args.fp32_stages) > n_stages:   # before minutes of export
        print(f"error: --fp32-stages {args.fp32_stages}: the backbone has {n_stages} stages", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    fp32, fp16 = args.out / "qfm_student_fp32.onnx", args.out / "qfm_student_fp16.onnx"
    onnx_export.export_fp32(model, fp32, args.opset)
    report = {"checkpoint": str(args.checkpoint), "opset": args.opset}
    if not args.no_slim:
        report["slim_fp32"] = onnx_export.slim(fp32)
    stages = onnx_export.backbone_stages(onnx.load(str(fp32)))
    if len(stages) != n_stages:
        raise RuntimeError(f"export named {len(stages)} backbone stages, the model has {n_stages}")
    counts = range(len(stages) + 1) if args.fp32_stages == "auto" else [int(args.fp32_stages)]

    x = parity.parity_crops(model, args.parity_images)
    ref = parity.run_torch(model, x)
    report["parity_fp32"] = parity.compare(ref, parity.run_onnx(parity.ort_session(fp32), x))

    for n in counts:  # all-FP16 first; one more FP32 stage per try
        keep = tuple(name for _, names in stages[:n] for name in names)
        onnx_export.convert_fp16(fp32, fp16, keep_fp32=keep)
        report["parity_fp16"] = parity.compare(ref, parity.run_onnx(parity.ort_session(fp16), x))
        report["fp16_precision"] = {"fp32_stages": [name for name, _ in stages[:n]], "fp32_nodes": len(keep)}
        if _fp16_ok(report["parity_fp16"]):
            break
    for name, path in (("fp32", fp32), ("fp16", fp16)):
        report[name] = {**onnx_export.check(path), "sha256": sha256_file(path), "path": str(path)}
    ok = report["parity_fp32"]["max_abs_score_diff"] <= FP32_MAX_DIFF and _fp16_ok(report["parity_fp16"])
    report["parity_ok"] = ok
    write_json(args.out / "onnx_report.json", report)
    print(json.dumps({k: report[k] for k in ("parity_fp32", "parity_fp16", "fp16_precision", "parity_ok")}, indent=2))
    print(f"wrote {fp32} ({report['fp32']['bytes'] / 2**20:.1f} MB), {fp16} ({report['fp16']['bytes'] / 2**20:.1f} MB)")
    if not ok:
        print(f"error: parity outside limits (FP32 <= {FP32_MAX_DIFF}, FP16 <= {FP16_MAX_DIFF} and SRCC >= "
              f"{FP16_MIN_SRCC})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
