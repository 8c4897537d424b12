"""Export a student checkpoint to ONNX (FP32 and FP16) and print the parity report.

    python export/to_onnx.py --checkpoint models/qfm_iqm --out build/

Writes build/qfm_student_fp32.onnx, build/qfm_student_fp16.onnx and build/onnx_report.json.
Both have input `image` (batch, 3, S, S) with a dynamic `batch` axis (FP32 input in the FP32
model, FP16 in the FP16 model) and FP32 outputs `score` (batch,) and `embedding` (batch, D).
Parity: ONNX Runtime vs PyTorch on crops of held-out synthetic-benchmark images.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from export import onnx_export, parity
from export.files import sha256_file
from training.checkpoint import load_student

# Acceptance limits on the 0..100 score scale (issue #4).
FP32_MAX_DIFF, FP16_MAX_DIFF, FP16_MIN_SRCC = 1e-3, 0.5, 0.999


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--checkpoint", required=True, type=Path, help="student folder (model.safetensors + config.json)")
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--opset", type=int, default=onnx_export.DEFAULT_OPSET)
    ap.add_argument("--no-slim", action="store_true", help="skip the onnxslim cleanup")
    ap.add_argument("--parity-images", type=int, default=24, help="held-out images whose crops are compared")
    args = ap.parse_args(argv)
    try:
        model = load_student(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    fp32, fp16 = args.out / "qfm_student_fp32.onnx", args.out / "qfm_student_fp16.onnx"
    onnx_export.export_fp32(model, fp32, args.opset)
    report = {"checkpoint": str(args.checkpoint), "opset": args.opset}
    if not args.no_slim:
        report["slim_fp32"] = onnx_export.slim(fp32)
    onnx_export.convert_fp16(fp32, fp16)
    for name, path in (("fp32", fp32), ("fp16", fp16)):
        report[name] = {**onnx_export.check(path), "sha256": sha256_file(path), "path": str(path)}

    x = parity.parity_crops(model, args.parity_images)
    ref = parity.run_torch(model, x)
    report["parity_fp32"] = parity.compare(ref, parity.run_onnx(parity.ort_session(fp32), x))
    report["parity_fp16"] = parity.compare(ref, parity.run_onnx(parity.ort_session(fp16), x))
    ok = (report["parity_fp32"]["max_abs_score_diff"] <= FP32_MAX_DIFF
          and report["parity_fp16"]["max_abs_score_diff"] <= FP16_MAX_DIFF
          and report["parity_fp16"]["srcc_vs_reference"] >= FP16_MIN_SRCC)
    report["parity_ok"] = ok
    tmp = args.out / "onnx_report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2))
    os.replace(tmp, args.out / "onnx_report.json")
    print(json.dumps({k: report[k] for k in ("parity_fp32", "parity_fp16", "parity_ok")}, indent=2))
    print(f"wrote {fp32} ({report['fp32']['bytes'] / 2**20:.1f} MB), {fp16} ({report['fp16']['bytes'] / 2**20:.1f} MB)")
    if not ok:
        print(f"error: parity outside limits (FP32 <= {FP32_MAX_DIFF}, FP16 <= {FP16_MAX_DIFF} and SRCC >= "
              f"{FP16_MIN_SRCC})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
