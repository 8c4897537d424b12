"""Golden scores: the bundled model's scores of ten fixture images at every stage of the pipeline,
committed in tests/golden_scores.csv, so a change to the weights, the export, the crop plan or
the serving path shows up in CI as a changed number.

Fixtures: four LIVEC dev photographs (real, human-rated) and six distorted versions of
scikit-image's bundled photographs, made on the fly by the synthetic benchmark's own distortion
code with fixed seeds. Stages (each the mean over the 3x3 crop grid): PyTorch FP32, ONNX Runtime
on the FP32 and the FP16 export, and the served ensemble (tests/test_serving.py has the server).

    python tests/golden.py      # recompute everything (starts a Triton server) and rewrite the CSV
"""
from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from training.checkpoint import BUNDLED

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
CSV = Path(__file__).with_name("golden_scores.csv")
BUNDLE = BUNDLED
STAGES = ("torch_fp32", "onnx_fp32", "onnx_fp16", "served")
# Per-stage tolerance on the 0..100 scale: FP32 arithmetic differs across CPUs' vector units only in
# the last bits; FP16 kernels differ more between ONNX Runtime builds. A retrained or re-exported
# model moves scores by whole points.
TOLERANCE = {"torch_fp32": 0.01, "onnx_fp32": 0.01, "onnx_fp16": 0.1, "served": 0.01}
ITEMS = ["livec:images/100.png", "livec:images/103.png", "livec:images/104.png", "livec:images/105.png",
         "skimage:astronaut:jpeg:4", "skimage:coffee:gaussian_blur:3", "skimage:chelsea:white_noise:2",
         "skimage:rocket:pixelate:5", "skimage:coffee:contrast_decrease:4", "skimage:astronaut:none:0"]


def load(item: str) -> np.ndarray:
    """The fixture image (H, W, 3) uint8."""
    from training.data.registry import LIVEC_DEV_ROOT
    from qfm_core.crops import load_rgb
    kind, *spec = item.split(":")
    if kind == "livec":
        return load_rgb(LIVEC_DEV_ROOT / spec[0])
    import skimage.data
    from training.data.synthetic.distortions import apply
    photo, distortion, level = spec[0], spec[1], int(spec[2])
    img = np.ascontiguousarray(getattr(skimage.data, photo)()[..., :3])
    if distortion == "none":
        return img
    return apply(distortion, img, level, np.random.default_rng(ITEMS.index(item)))


def png(img: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")   # lossless: the server sees exactly these pixels
    return buf.getvalue()


def torch_scores(checkpoint: Path = BUNDLE) -> np.ndarray:
    from training.checkpoint import load_plan, load_student
    from training.inference import predict_images
    return predict_images(load_student(checkpoint).float(), [load(i) for i in ITEMS], load_plan(checkpoint),
                          progress=False)


def offline_scores(onnx_dir: Path) -> dict[str, np.ndarray]:
    """PyTorch FP32 and ONNX Runtime FP32 / FP16 scores of ITEMS."""
    import onnxruntime as ort

    from qfm_core import io_names
    from training.checkpoint import load_plan
    images = [load(i) for i in ITEMS]
    out = {"torch_fp32": torch_scores()}
    plan = load_plan(BUNDLE)
    for precision in ("fp32", "fp16"):
        sess = ort.InferenceSession(str(onnx_dir / f"qfm_student_{precision}.onnx"), providers=["CPUExecutionProvider"])
        dtype = np.float16 if precision == "fp16" else np.float32
        out[f"onnx_{precision}"] = np.array([
            float(sess.run([io_names.CROP_SCORES], {io_names.CROPS: plan.normalize(plan.crops(img)).astype(dtype)})[0].mean())
            for img in images])
    return out


def served_scores(grpc_url: str) -> np.ndarray:
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import infer_images
    from qfm_core import io_names
    result = infer_images(grpc_url, [png(load(i)) for i in ITEMS], outputs=io_names.SCORE_OUTPUTS)
    assert not any(result.as_numpy(io_names.ITEM_ERROR)), result.as_numpy(io_names.ITEM_ERROR)
    return result.as_numpy(io_names.SCORE).astype(np.float64)


def read() -> dict[str, dict[str, float]]:
    with CSV.open() as f:
        return {row["item"]: {s: float(row[s]) for s in STAGES} for row in csv.DictReader(f)}


def main() -> int:
    import tempfile

    from export import triton_repo
    from serving.triton_server import TritonServer
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        r = subprocess.run([sys.executable, "export/to_onnx.py", "--checkpoint", str(BUNDLE), "--out", str(tmp)],
                           cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        r = subprocess.run([sys.executable, "export/build_bank.py", "--checkpoint", str(BUNDLE), "--dataset", "livec",
                            "--limit", "40", "--out", str(tmp / "bank.safetensors")], cwd=REPO, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-2000:]
        scores = offline_scores(tmp)
        triton_repo.write_repository("cpu-pip", BUNDLE, tmp / "repo", tmp / "bank.safetensors",
                                     onnx=tmp / "qfm_student_fp32.onnx")
        with TritonServer(tmp / "repo") as server:
            scores["served"] = served_scores(server.grpc_url)
    with CSV.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["item", *STAGES])
        for n, item in enumerate(ITEMS):
            w.writerow([item, *(f"{scores[s][n]:.4f}" for s in STAGES)])
    print(CSV.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
