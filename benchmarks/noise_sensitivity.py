"""How far does a student's score move under input changes a person cannot see?

    python benchmarks/noise_sensitivity.py --checkpoint models/qfm_iqm [--images 24] [--out F.json]

On the export's parity crops (held-out synthetic photographs, 2x2 crops each; export/parity.py),
PyTorch FP32, each perturbation against the unperturbed score on the 0..100 scale:
  fp16_input    the normalised input rounded to FP16 (what the FP16 engine's input does)
  gauss_0.5     Gaussian noise of 0.5 grey levels (std) added to the pixels
  requant_1     every pixel moved by -1, 0 or +1 grey level at random (what two JPEG decoders or
                resamplers can disagree by), kept in 0..255
Why it matters: a quality model reads faint high-frequency signal on purpose (noise is a
distortion), and the same sensitivity is what FP16 rounding of early activations triggers; this is
the figure behind the export's FP32-stage choice (README, "Results").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from export import parity
from training.checkpoint import BUNDLED, load_student
from training.cli import HelpFormatter

GRID = 2  # crops per side, as the export's parity check uses


def perturbations(x: np.ndarray, mean, std, rng: np.random.Generator) -> dict[str, np.ndarray]:
    mean = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    pixels = np.clip(np.rint((x * std + mean) * 255.0), 0, 255)  # back to the crops' grey levels

    def renorm(p):
        return ((p / 255.0 - mean) / std).astype(np.float32)

    return {
        "fp16_input": x.astype(np.float16).astype(np.float32),
        "gauss_0.5": renorm(pixels + rng.normal(0.0, 0.5, x.shape)),
        "requant_1": renorm(np.clip(pixels + rng.integers(-1, 2, x.shape), 0, 255)),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=BUNDLED)
    ap.add_argument("--images", type=int, default=24, help="held-out synthetic images (4 crops each)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args(argv)
    try:
        model = load_student(args.checkpoint)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    images = parity.parity_images(args.images)  # the export's parity images, generated once
    x = parity.crops_of(model, [im for im, _, _ in images], GRID)
    # crops_of keeps image order, GRID x GRID crops per image: the distortion of every crop.
    crop_labels = [f"{name}@{level}" for _, name, level in images for _ in range(GRID * GRID)]
    base = parity.run_torch(model, x)[0]
    result = {"checkpoint": str(args.checkpoint), "n_crops": int(len(x))}
    for name, xp in perturbations(x, model.cfg.mean, model.cfg.std, np.random.default_rng(args.seed)).items():
        delta = parity.run_torch(model, xp)[0] - base
        diff = np.abs(delta)
        worst = np.argsort(-diff)[:5]
        result[name] = {"max_abs_score_diff": float(diff.max()), "mean_abs_score_diff": float(diff.mean()),
                        "p95_abs_score_diff": float(np.percentile(diff, 95)),
                        "largest": [{"distortion": crop_labels[i], "score": round(float(base[i]), 2),
                                     "change": round(float(delta[i]), 2)} for i in worst]}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
