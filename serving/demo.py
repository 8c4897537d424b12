"""`make demo`: serve the bundled model with a real Triton server on this CPU and score sample
images through gRPC.

Steps (artifacts are reused when up to date): export the FP32 ONNX student, build the reference
bank (LIVEC dev photographs with their human MOS), write the cpu-pip repository into triton_repo/,
generate the sample images (SYNTHETIC: held-out photographs of the synthetic benchmark with
distortions, labelled by full-reference metrics), start tritonserver on free localhost ports,
score the samples with stock tritonclient gRPC calls, print a table and the SRCC against the
labels, and stop the server (also on Ctrl-C or failure).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from pathlib import Path

import numpy as np

from training.cli import HelpFormatter
from qfm_core import io_names
from training.checkpoint import BUNDLED

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = BUNDLED
BUILD = REPO / "build"
SAMPLES = REPO / "data_cache" / "demo_samples"
# (distortion, level) pairs applied to each held-out photograph: a spread from clean to severe.
SAMPLE_PLAN = (("none", 0), ("jpeg", 2), ("gaussian_blur", 3), ("white_noise", 4), ("pixelate", 4), ("jpeg2000", 5))


def _fingerprint(*sources: Path) -> str:
    return "".join(f"{hashlib.sha256(s.read_bytes()).hexdigest()}  {s.name}\n" for s in sources)


def _stamp(target: Path) -> Path:
    return target.with_name(target.name + ".sources")


def _stale(target: Path, fingerprint: str) -> bool:
    """By content, not mtime: a `git checkout` touches the weights without changing them, and an
    ONNX export + bank rebuild costs minutes. The stamp beside the target holds what it was built from."""
    stamp = _stamp(target)
    return not target.exists() or not stamp.exists() or stamp.read_text() != fingerprint


def _mark_built(target: Path, fingerprint: str) -> None:
    # The fingerprint taken before the build: weights changed during it leave the target stale.
    _stamp(target).write_text(fingerprint)


def ensure_artifacts(bank_dataset: str) -> None:
    from export import build_bank, to_onnx, triton_repo

    weights = _fingerprint(CHECKPOINT / "model.safetensors", CHECKPOINT / "config.json")
    onnx32 = BUILD / "qfm_student_fp32.onnx"
    if _stale(onnx32, weights):
        print("[demo] exporting the bundled student to ONNX ...")
        # Default parity set: the FP16 precision choice (--fp32-stages auto) is made on it.
        if to_onnx.main(["--checkpoint", str(CHECKPOINT), "--out", str(BUILD)]) != 0:
            raise SystemExit("ONNX export failed")
        _mark_built(onnx32, weights)
    bank, bank_sources = BUILD / "bank.safetensors", weights + f"bank dataset: {bank_dataset}\n"
    if _stale(bank, bank_sources):
        print(f"[demo] building the reference bank from {bank_dataset} ...")
        if build_bank.main(["--checkpoint", str(CHECKPOINT), "--dataset", bank_dataset, "--out", str(bank)]) != 0:
            raise SystemExit("bank build failed")
        _mark_built(bank, bank_sources)
    print("[demo] writing the cpu-pip Triton repository into triton_repo/ ...")
    triton_repo.write_repository("cpu-pip", CHECKPOINT, REPO / "triton_repo", bank, onnx=onnx32)


def make_samples() -> list[dict]:
    """Deterministic sample images from the synthetic benchmark's held-out photographs."""
    from PIL import Image

    from training.data.build_synthetic import split_photos, square_views
    from training.data.synthetic.distortions import apply
    from training.data.synthetic.labels import full_reference_metrics, metrics_to_label
    from training.data.synthetic.photos import PHOTOS, load_photo

    SAMPLES.mkdir(parents=True, exist_ok=True)
    rows = []
    for photo in (p for p in PHOTOS if p.name in split_photos(0, 0.2)):
        ref = square_views(load_photo(photo), 288)[0][1]
        imgs = [ref if d == "none" else apply(d, ref, lv, np.random.default_rng([7, lv])) for d, lv in SAMPLE_PLAN]
        labels = metrics_to_label(full_reference_metrics(imgs, ref))
        for (d, lv), img, label in zip(SAMPLE_PLAN, imgs, labels):
            path = SAMPLES / f"{photo.name}_{d}{lv or ''}.png"
            Image.fromarray(img).save(path)
            rows.append({"image": path.name, "label": float(label)})
    with open(SAMPLES / "labels.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["image", "label"])
        w.writeheader()
        w.writerows(rows)
    return rows


def score_through_triton(url: str, rows: list[dict], k_show: int = 3) -> np.ndarray:
    import tritonclient.grpc as grpcclient
    from scipy import stats

    from qfm_core.bank import load_bank

    bank = load_bank(BUILD / "bank.safetensors")
    client = grpcclient.InferenceServerClient(url)
    blobs = [(SAMPLES / r["image"]).read_bytes() for r in rows]
    scores = []
    print(f"\n{'image':40s} {'label*':>7s} {'score':>7s}   nearest references (bank score)")
    for i in range(0, len(blobs), 6):  # a few images per request, as a client would batch them
        inp = grpcclient.InferInput(io_names.IMAGE, [len(blobs[i:i + 6])], "BYTES")
        inp.set_data_from_numpy(np.array(blobs[i:i + 6], dtype=object))
        result = client.infer(io_names.ENSEMBLE, [inp], client_timeout=120)
        s, ids = result.as_numpy(io_names.SCORE), result.as_numpy(io_names.NEIGHBOR_IDS)
        nscores = result.as_numpy(io_names.NEIGHBOR_SCORES)
        for j, row in enumerate(rows[i:i + 6]):
            near = ", ".join(f"{Path(bank['names'][ids[j, n]]).name} ({nscores[j, n]:.0f})" for n in range(k_show))
            print(f"{row['image']:40s} {row['label']:7.1f} {s[j]:7.1f}   {near}")
            scores.append(float(s[j]))
    labels = [r["label"] for r in rows]
    print(f"\n{len(rows)} images scored through Triton gRPC; SRCC vs labels = {stats.spearmanr(scores, labels)[0]:.3f}, "
          f"PLCC = {stats.pearsonr(scores, labels)[0]:.3f}")
    print("* labels are SYNTHETIC (full-reference metrics against the clean photograph), not human opinions; "
          "bank scores are LIVEC human MOS.")
    return np.asarray(scores)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--bank-dataset", default="livec", help="reference set of the bank (name or CSV)")
    ap.add_argument("--prepare-only", action="store_true", help="build the artifacts and triton_repo/, then exit "
                    "(what `make serve` runs first)")
    args = ap.parse_args(argv)
    from serving.triton_server import ServerError, TritonServer

    ensure_artifacts(args.bank_dataset)
    if args.prepare_only:
        return 0
    rows = make_samples()
    print("[demo] starting tritonserver (localhost) ...")
    try:
        with TritonServer(REPO / "triton_repo") as server:
            print(f"[demo] ready: gRPC {server.grpc_url}")
            score_through_triton(server.grpc_url, rows)
            print("[demo] stopping the server")
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("\n[demo] interrupted; server stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
