r"""The artifacts the serving image carries, in one layout read by the entrypoint.

    python serving/image_artifacts.py --out build/image/artifacts     (`make image-artifacts`)

    <out>/checkpoint/            the student (config.json with its crop plan, model.safetensors)
    <out>/qfm_student_fp32.onnx  the CPU targets' student (ONNX Runtime)
    <out>/qfm_student_fp16.onnx  what the GPU host builds its TensorRT engine from
    <out>/bank.safetensors       the reference bank, built by that student

Engines are not among them: they are built on the serving GPU (serving/entrypoint.py).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from qfm_core.files import atomic_dir
from training.cli import HelpFormatter

CHECKPOINT, ONNX_FP32, ONNX_FP16, BANK = "checkpoint", "qfm_student_fp32.onnx", "qfm_student_fp16.onnx", "bank.safetensors"
REPO_ROOT = Path(__file__).resolve().parents[1]


def stage(out: Path, checkpoint: Path, build: Path) -> list[Path]:
    """Copy the artifacts into `out` (replaced whole: a half-staged folder never stays behind)."""
    sources = {CHECKPOINT: checkpoint, ONNX_FP32: build / ONNX_FP32, ONNX_FP16: build / ONNX_FP16, BANK: build / BANK}
    missing = [str(p) for p in sources.values() if not p.exists()]
    if missing:
        raise FileNotFoundError(f"missing {', '.join(missing)}: run `make serve` or `python serving/demo.py "
                                f"--prepare-only` first")
    with atomic_dir(out) as tmp:
        for name, src in sources.items():
            if src.is_dir():
                shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("*.partial", "__pycache__"))
            else:
                shutil.copy2(src, tmp / name)
    return sorted(out.rglob("*"))


def main(argv=None) -> int:
    from training.checkpoint import BUNDLED

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "build" / "image" / "artifacts")
    ap.add_argument("--checkpoint", type=Path, default=BUNDLED, help="student folder")
    ap.add_argument("--build", type=Path, default=REPO_ROOT / "build", help="folder with the ONNX files and the bank")
    args = ap.parse_args(argv)
    try:
        files = stage(args.out, args.checkpoint, args.build)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"staged {len([f for f in files if f.is_file()])} files in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
