"""The TensorRT half of the GPU path on a GPU host with datacenter TensorRT (>= 10.9):

  1. the bundled student -> ONNX (export/to_onnx.py) -> FP16 engine (export/build_engine.py); its
     scores against ONNX Runtime's FP16 model on the same crops, and its throughput;
  2. a synthetic bank (random embeddings, exact duplicates, known ties) -> the match engine with our
     two AOT plugins (export/build_match_engine.py); its answers against the float64 reference:
     distances, indices, lower index first among ties, real rows for a NaN query.

    python benchmarks/tensorrt_check.py [--out build/gpu_check/tensorrt]

Exits 77 ("skipped") without TensorRT, 2 without a GPU, 1 when a check fails.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import NO_TENSORRT, REPO, TensorRTEngine, dry_run, skip, write_json
from qfm_core import io_names
from training.checkpoint import BUNDLED
from training.cli import HelpFormatter

DIM, K, BANK_ROWS = 384, 8, 20_011


def _run(*args) -> None:
    r = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({r.returncode}): {r.stderr.strip()[-1500:]}")


def check_student(trt, out: Path) -> dict:
    import onnxruntime as ort
    import torch

    from benchmarks.common import crops_batch
    _run("export/to_onnx.py", "--checkpoint", BUNDLED, "--out", out, "--parity-images", "4")
    plan = out / "qfm_student_fp16.plan"
    _run("export/build_engine.py", "--onnx", out / "qfm_student_fp16.onnx", "--engine", plan,
         "--min-batch", "1", "--opt-batch", "64", "--max-batch", "128")
    cfg = json.loads((REPO / "models/qfm_iqm/config.json").read_text())["student"]
    x = crops_batch(cfg, n_images=8, grid=2, allow_random=True).astype(np.float16)
    engine = TensorRTEngine(trt, plan)
    got = {k: v.cpu().numpy() for k, v in engine.run(**{io_names.CROPS: torch.from_numpy(x).cuda()}).items()}
    ref_score, ref_emb = ort.InferenceSession(str(out / "qfm_student_fp16.onnx"), providers=["CPUExecutionProvider"]
                                              ).run([io_names.CROP_SCORES, io_names.CROP_EMBEDDINGS], {io_names.CROPS: x})
    score, emb = got[io_names.CROP_SCORES], got[io_names.CROP_EMBEDDINGS]
    diff = float(np.abs(score - ref_score).max())
    cos = float(np.min(np.sum(emb * ref_emb, 1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref_emb, axis=1))))
    xb = torch.from_numpy(np.concatenate([x] * (128 // len(x)))).cuda()
    engine.run(**{io_names.CROPS: xb})
    t0, reps = time.perf_counter(), 20
    for _ in range(reps):
        engine.run(**{io_names.CROPS: xb})
    crops_s = reps * len(xb) / (time.perf_counter() - t0)
    res = {"max_abs_score_diff_vs_ort_fp16": diff, "min_embedding_cosine": cos, "crops_per_s_batch128": crops_s,
           "ok": diff <= 0.5 and cos >= 0.999}
    print(f"student FP16 engine: |score - ORT FP16| max {diff:.3f} (<= 0.5), embedding cosine min {cos:.5f}; "
          f"{crops_s:.0f} crops/s at batch 128")
    return res


def check_match(trt, out: Path) -> dict:
    import torch

    from qfm_core.bank import save_synthetic_bank
    from export.kernels import reference
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(BANK_ROWS, DIM)).astype(np.float32)
    emb[[40, 41, 9000, 20_010]] = emb[7]           # five identical rows across the bank's splits
    bank = out / "bank.safetensors"
    save_synthetic_bank(bank, emb, rng.uniform(0, 100, BANK_ROWS).astype(np.float32))
    plan = out / "qfm_match.plan"
    _run("export/build_match_engine.py", "--bank", bank, "--engine", plan, "--k", K)
    engine = TensorRTEngine(trt, plan)
    q = rng.normal(size=(67, DIM)).astype(np.float32)
    q[0] = emb[7]
    q[1] = np.nan
    got = {k: v.cpu().numpy() for k, v in engine.run(**{io_names.MATCH_QUERY: torch.from_numpy(q).cuda()}).items()}
    q16, b16 = q.astype(np.float16), emb.astype(np.float16)
    ref_d, ref_i = reference.topk(q16[2:], b16, K)
    d, i = got[io_names.NEIGHBOR_DISTANCES], got[io_names.NEIGHBOR_INDEX]
    scale = np.abs(ref_d).max() + 1
    dist_ok = bool(np.abs(d[2:] - ref_d).max() <= 2e-3 * scale)
    ties_ok = i[0, :5].tolist() == [7, 40, 41, 9000, 20_010]
    nan_ok = bool(((i[1] >= 0) & (i[1] < BANK_ROWS)).all())
    index_agreement = float(np.mean(i[2:] == ref_i))
    res = {"distances_ok": dist_ok, "ties_lower_index_first": ties_ok, "nan_query_real_rows": nan_ok,
           "index_agreement": index_agreement, "ok": dist_ok and ties_ok and nan_ok and index_agreement >= 0.99,
           "engine": json.loads(plan.with_name(plan.name + ".json").read_text())}
    print(f"match engine: distances {'ok' if dist_ok else 'WRONG'}, ties {i[0, :5].tolist()} "
          f"({'ok' if ties_ok else 'WRONG'}), NaN query rows {'ok' if nan_ok else 'WRONG'}, "
          f"indices equal to the reference's {index_agreement:.4f}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("build/gpu_check/tensorrt"))
    args = ap.parse_args(argv)
    if dry_run(args, ("torch", "qfm_core.bank", "export.kernels.reference", "export.build_match_engine", "export.build_engine")):
        return 0
    try:
        import tensorrt as trt
    except ImportError:
        return skip(NO_TENSORRT)
    import torch
    if not torch.cuda.is_available():
        print("tensorrt_check: no CUDA GPU visible", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    results, ok = {"tensorrt": trt.__version__}, True
    for name, fn in (("student", check_student), ("match", check_match)):
        try:   # each half independent: a failed student build still checks the plugins
            results[name] = fn(trt, args.out)
        except Exception as e:
            results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            print(f"{name}: FAILED: {type(e).__name__}: {e}")
        ok &= results[name]["ok"]
    write_json(results, args.out / "tensorrt_check.json")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
