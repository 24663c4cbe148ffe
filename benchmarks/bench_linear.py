"""Linear probe (Adam, cosine, 50 epochs, weight-decay grid with validation selection) on 10,000 x 768.

Writes benchmarks/results/bench_linear.json.
"""

from __future__ import annotations

import time

import numpy as np
from _common import benchmark_parser, report, start

from dermino.evaluate.linear import LinearConfig, fit_linear_probe


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=7)
    args = ap.parse_args()
    start(args)
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, size=args.n)
    x = (rng.standard_normal((args.n, args.dim)) + 0.04 * rng.standard_normal((args.classes, args.dim))[y])
    x = x.astype(np.float32)
    n_val = args.n // 8
    rows = []
    for name, cfg in (
        ("full batch, 4 wd", LinearConfig()),
        ("mini-batch 256, 4 wd", LinearConfig(batch_size=256)),
        ("full batch, 1 wd", LinearConfig(weight_decays=[0.0])),
    ):
        t0 = time.perf_counter()
        probe = fit_linear_probe(x[n_val:], y[n_val:], args.classes, x[:n_val], y[:n_val], cfg)
        rows.append({"setting": name, "seconds": time.perf_counter() - t0, "val_score": probe.val_score,
                     "weight_decay": probe.weight_decay, "epoch": probe.epoch})
    report(__file__, args, f"linear probe: {args.n} x {args.dim}, {args.classes} classes", rows,
           [("setting", "setting", "24s"), ("seconds", "s", ".2f"), ("val_score", "val AUROC", ".3f"),
            ("weight_decay", "wd", "g"), ("epoch", "epoch", "d")])


if __name__ == "__main__":
    main()
