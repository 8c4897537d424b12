r"""Every kernel and tile tactic once, on odd sizes, for compute-sanitizer (memcheck, racecheck):

    compute-sanitizer --tool memcheck --kernel-name kns=qfm_ --error-exitcode 1 \
        python benchmarks/kernel_sanitize.py

Sizes that are not multiples of the tiles (N = 67, M = 1001), a feature width that is not a
multiple of 8 (D = 100, padded by the launcher), a bank slice shorter than k, both metrics, k = 1
and 32, and a few rows of zeros (cosine's norm floor) and NaN (the rank-last path). The results are
also checked against the float64 reference, so a run that the sanitizer passes is a correct one.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from benchmarks.common import dry_run
from training.cli import HelpFormatter

SHAPES = {"small": [(67, 1001, 384, 32), (5, 129, 100, 1)],
          "all": [(67, 1001, 384, 32), (5, 129, 100, 1), (130, 4099, 136, 7)]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shapes", choices=sorted(SHAPES), default="all",
                    help="small: the two smallest (racecheck is slow); all: every shape")
    args = ap.parse_args(argv)
    if dry_run(args, ("torch", "export.kernels.reference", "export.kernels.launch")):
        return 0
    import torch

    from export.kernels import reference
    from export.kernels.compile import METRICS, TILES
    from export.kernels.launch import PairwiseTopK

    if not torch.cuda.is_available():
        print("kernel_sanitize: no CUDA GPU visible", file=sys.stderr)
        return 2
    knn, rng, bad = PairwiseTopK(), np.random.default_rng(args.seed), 0
    for n, m, d, k in SHAPES[args.shapes]:
        q = rng.normal(size=(n, d)).astype(np.float16)
        b = rng.normal(size=(m, d)).astype(np.float16)
        q[1], b[3] = 0, 0                        # zero norms
        for metric in METRICS:
            ref_d, _ = reference.topk(q, b, k, metric)
            for tactic in TILES:
                for splits in (None, m // 3 + 1):  # the default schedule, and slices shorter than k
                    got_d, got_i = knn.topk(torch.from_numpy(q), torch.from_numpy(b), k, metric, tactic, splits)
                    got_d = got_d.cpu().numpy()
                    err = float(np.abs(got_d - ref_d).max() / (np.abs(ref_d).max() + 1))
                    ok = err < 2e-3 and bool((got_i.cpu().numpy() >= 0).all())
                    bad += not ok
                    print(f"topk n={n} m={m} d={d} k={k} {metric} tactic {tactic} splits {splits}: "
                          f"{'ok' if ok else 'WRONG'} (rel err {err:.1e})")
                full = knn.pairwise(torch.from_numpy(q), torch.from_numpy(b), metric, tactic).cpu().numpy()
                ref = reference.distances(q, b, metric)
                err = float(np.abs(full - ref).max() / (np.abs(ref).max() + 1))
                bad += err >= 2e-3
                print(f"pairwise n={n} m={m} d={d} {metric} tactic {tactic}: rel err {err:.1e}")
    qn = np.full((3, 384), np.nan, np.float16)
    _, idx = knn.topk(torch.from_numpy(qn), torch.from_numpy(rng.normal(size=(500, 384)).astype(np.float16)), 8)
    nan_ok = bool(((idx >= 0) & (idx < 500)).all())
    bad += not nan_ok
    print(f"NaN queries return real bank rows: {nan_ok}")
    print(f"kernel_sanitize: {'all correct' if not bad else f'{bad} WRONG'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
