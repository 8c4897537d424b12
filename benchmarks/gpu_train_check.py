"""A short QFM training run on a GPU, twice from the same seed: semantic-noise matching through our
CUDA kernel (fp16 in, fp32 accumulate), then through PyTorch (fp32). Same losses within tolerance,
and the matches themselves compared on the same memory.

    python benchmarks/gpu_train_check.py [--steps 40] [--out build/gpu_check/train_check.json]

The student is qfm_lite0 with its backbone randomly initialised (no weights to download) and the
crops and labels are random: this checks the training step on CUDA (devices, matching, backward),
not accuracy. Tolerances: per-step loss within 2 % of the PyTorch run's (the two diverge only
where fp16 distances reorder near-equal candidates), and >= 95 % of matches identical.
Exits 2 without a GPU, 77 without timm.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

from benchmarks.common import dry_run, skip, write_json
from training.cli import HelpFormatter

LOSS_RTOL, MATCH_AGREEMENT = 0.02, 0.95


def run(backend: str, steps: int, batch: int, seed: int, device):
    import torch

    from training.config import DEFAULTS
    from training.qfm.memory import MemoryBank
    from training.qfm.step import qfm_step
    from training.trainer import build_student

    cfg = copy.deepcopy(DEFAULTS)
    cfg["student"] = {"name": "qfm_lite0", "pretrained": "none"}
    cfg["qfm"].update(matching_backend=backend, min_memory=2 * batch, memory_size=8 * batch)
    torch.manual_seed(seed)
    model = build_student(cfg).to(device).train()
    memory = MemoryBank(cfg["qfm"]["memory_size"], model.cfg.embed_dim)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    gen = torch.Generator().manual_seed(seed)
    size = model.cfg.input_size
    logs = []
    for _ in range(steps):
        x = torch.randn(batch, 3, size, size, generator=gen).to(device)
        y = (torch.rand(batch, generator=gen) * 100).to(device)
        loss, log = qfm_step(model, x, y, memory, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        logs.append({"loss": loss.item(), **log})
    return logs, memory, model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("build/gpu_check/train_check.json"))
    args = ap.parse_args(argv)
    if dry_run(args, ("torch", "training.trainer", "training.qfm.step", "training.qfm.matching")):
        return 0
    import torch
    try:
        import timm  # noqa: F401
    except ImportError:
        return skip("timm not installed (pip install -r requirements.txt)")
    if not torch.cuda.is_available():
        print("gpu_train_check: no CUDA GPU visible", file=sys.stderr)
        return 2
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    device = torch.device("cuda", 0)
    from training.qfm.matching import semantic_noise_match

    kernel_logs, memory, model = run("kernel", args.steps, args.batch, args.seed, device)
    torch_logs, _, _ = run("torch", args.steps, args.batch, args.seed, device)
    rel = [abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-6) for a, b in zip(kernel_logs, torch_logs)]
    matched_steps = sum("pert" in a for a in kernel_logs)
    # the matches themselves, on the final memory: kernel vs PyTorch on the same features
    bank_f, bank_s = (t.to(device) for t in memory.contents())
    feats = bank_f[: args.batch] + 0.01 * torch.randn_like(bank_f[: args.batch])
    scores = bank_s[: args.batch]
    agree = []
    for metric in ("cosine", "sq_l2"):
        ik, vk = semantic_noise_match(feats, scores, bank_f, bank_s, 3.0, metric, backend="kernel")
        it, vt = semantic_noise_match(feats, scores, bank_f, bank_s, 3.0, metric, backend="torch")
        assert torch.equal(vk, vt)
        agree.append(float((ik == it)[vt].float().mean()) if vt.any() else 1.0)
    ok = max(rel) <= LOSS_RTOL and min(agree) >= MATCH_AGREEMENT and matched_steps > 0
    print(f"{args.steps} steps, batch {args.batch}, {matched_steps} steps with QFM matching")
    print(f"loss kernel vs torch: max relative difference {max(rel):.2e} (<= {LOSS_RTOL}); "
          f"first {kernel_logs[0]['loss']:.4f} / {torch_logs[0]['loss']:.4f}, "
          f"last {kernel_logs[-1]['loss']:.4f} / {torch_logs[-1]['loss']:.4f}")
    print(f"identical matches (cosine, sq_l2): {agree[0]:.3f}, {agree[1]:.3f} (>= {MATCH_AGREEMENT})")
    print(f"gpu_train_check: {'ok' if ok else 'FAILED'}")
    write_json({"steps": args.steps, "batch": args.batch, "matched_steps": matched_steps, "max_rel_loss_diff": max(rel),
                "match_agreement": dict(zip(("cosine", "sq_l2"), agree)), "ok": ok,
                "kernel": kernel_logs, "torch": torch_logs}, args.out)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
