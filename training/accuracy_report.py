"""Collect issue #3's LIVEC experiments into one table and one plot.

    python training/accuracy_report.py --out runs/accuracy_report     # -> .md, .json, .png

Reads runs/ablation/*/protocol.json, runs/distill_livec*/distill.json, runs/baselines/livec.json,
and the full recipe's runs/livec_protocol/protocol.json; missing ones are listed, not invented.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.cli import HelpFormatter

ROWS = [  # (label, file, how to read the per-seed SRCC/PLCC)
    ("BRISQUE features (piq) + SVR", "runs/baselines/livec.json", ("methods", "brisque")),
    ("frozen ImageNet Lite0 + ridge", "runs/baselines/livec.json", ("methods", "lite0_ridge")),
    ("(a) plain regression head", "runs/ablation/a_plain/protocol.json", ()),
    ("(b) + feature gate + query decoder", "runs/ablation/b_gate_decoder/protocol.json", ()),
    ("(c) + QFM matching / perturbation", "runs/ablation/c_qfm/protocol.json", ()),
    ("(c') + distillation from a Lite2 teacher", "runs/distill_livec/distill.json", ("student",)),
    ("    Lite2 teacher itself", "runs/distill_livec/distill.json", ("teacher",)),
    ("(d) = (c) from scratch (no ImageNet)", "runs/ablation/d_qfm_scratch/protocol.json", ()),
    ("(e) = (c) from synthetic pretraining", "runs/ablation/e_qfm_synthetic_init/protocol.json", ()),
    ("(e) + (c'): synthetic pretraining + distillation", "runs/distill_livec_synthinit/distill.json", ("student",)),
    ("(e) + (c') + synthetic replay", "runs/distill_synthinit_replay/distill.json", ("student",)),
    ("(f) = (e), 8 epochs, only stem + block 0 frozen", "runs/ablation/f_qfm_longer_unfrozen/protocol.json", ()),
    ("(g) = bundled recipe with (f)'s freezing (stem + block 0)", "runs/ablation/g_unfrozen_replay/protocol.json", ()),
    ("full recipe, 8 epochs + synthetic replay (bundled recipe)", "runs/livec_protocol/protocol.json", ()),
]


def per_seed(doc: dict, path: tuple) -> list[tuple[float, float]]:
    if path and path[0] == "methods":
        runs = doc["methods"][path[1]]["runs"]
        return [(r["srcc"], r["plcc"]) for r in runs]
    if path:
        return [(r[path[0]]["srcc"], r[path[0]]["plcc"]) for r in doc["runs"]]
    return [(r["srcc"], r["plcc"]) for r in doc["runs"]]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/accuracy_report"))
    args = ap.parse_args(argv)
    import statistics
    table, missing = [], []
    for label, file, path in ROWS:
        f = Path(file)
        if not f.exists():
            missing.append(f"{label}: {file}")
            continue
        seeds = per_seed(json.loads(f.read_text()), path)
        table.append({"method": label, "file": file, "srcc_median": statistics.median(s for s, _ in seeds),
                      "plcc_median": statistics.median(p for _, p in seeds), "srcc_seeds": [s for s, _ in seeds],
                      "plcc_seeds": [p for _, p in seeds]})
    lines = ["| method (LIVEC dev, 80/20 seeds 0-2, median) | SRCC | PLCC | SRCC per seed |", "|---|---|---|---|"]
    for r in table:
        lines.append(f"| {r['method'].strip()} | {r['srcc_median']:.3f} | {r['plcc_median']:.3f} | "
                     f"{', '.join(f'{s:.3f}' for s in r['srcc_seeds'])} |")
    if missing:
        lines.append("\nnot run: " + "; ".join(missing))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(table, indent=2) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(table) + 1.2))
    y = range(len(table))
    ax.barh(list(y), [r["srcc_median"] for r in table], color="#4c72b0", label="median SRCC")
    for i, r in enumerate(table):
        ax.plot(r["srcc_seeds"], [i] * len(r["srcc_seeds"]), "k.", ms=5)
    ax.axvline(0.82, color="#c44e52", ls="--", lw=1, label="target 0.82")
    ax.set_yticks(list(y), [r["method"].strip() for r in table], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("SRCC on the held-out 20 % (dots: seeds)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=110)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
