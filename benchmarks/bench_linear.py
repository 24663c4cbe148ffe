"""Linear probe (Adam, cosine, 50 epochs, weight-decay grid with validation selection) on 10,000 x 768.

Writes benchmarks/results/bench_linear.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dermino.evaluate.linear import LinearConfig, fit_linear_probe

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(2)
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
        start = time.perf_counter()
        probe = fit_linear_probe(x[n_val:], y[n_val:], args.classes, x[:n_val], y[:n_val], cfg)
        sec = time.perf_counter() - start
        rows.append({"setting": name, "seconds": sec, "val_score": probe.val_score,
                     "weight_decay": probe.weight_decay, "epoch": probe.epoch})
    print(f"linear probe: {args.n} x {args.dim}, {args.classes} classes, 50 epochs, 2 threads")
    print(f"{'setting':24s} {'s':>7s} {'val AUROC':>9s} {'wd':>7s} {'epoch':>5s}")
    for r in rows:
        print(f"{r['setting']:24s} {r['seconds']:7.2f} {r['val_score']:9.3f} {r['weight_decay']:7g} {r['epoch']:5d}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "bench_linear.json").write_text(json.dumps({**vars(args), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
