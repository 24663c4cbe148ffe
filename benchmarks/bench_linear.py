"""Linear probe recipes on synthetic N x D features: time, validation score and agreement with scikit-learn.

Rows: the default (L-BFGS, C swept on validation), the paper's Adam recipe with mini-batches,
Adam full batch (the old default: 50 epochs = 50 steps), and scikit-learn's LogisticRegression
at the C our sweep chose (the reference the default must match within 0.005 AUROC).
Run with one thread; writes benchmarks/results/bench_linear.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dermino.evaluate.linear import LinearConfig, fit_linear_probe
from dermino.evaluate.metrics import macro_auroc

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, size=args.n)
    x = (rng.standard_normal((args.n, args.dim)) + 0.1 * rng.standard_normal((args.classes, args.dim))[y])
    x = x.astype(np.float32)
    n_val = args.n // 8
    n_test = args.n // 4
    te, va, tr = slice(0, n_test), slice(n_test, n_test + n_val), slice(n_test + n_val, None)
    rows = []
    chosen_c = None
    for name, cfg in (
        ("lbfgs, C swept (default)", LinearConfig()),
        ("adam mini-batch 256", LinearConfig(method="adam")),
        ("adam full batch (old)", LinearConfig(method="adam", batch_size=0)),
    ):
        start = time.perf_counter()
        probe = fit_linear_probe(x[tr], y[tr], args.classes, x[va], y[va], cfg)
        sec = time.perf_counter() - start
        chosen_c = chosen_c or probe.C
        rows.append({"setting": name, "seconds": sec, "val_score": probe.val_score,
                     "test_auroc": macro_auroc(y[te], probe.predict_proba(x[te])), "C": probe.C,
                     "weight_decay": probe.weight_decay, "epoch_or_iters": probe.epoch})
    from sklearn.linear_model import LogisticRegression

    mu, sd = x[tr].mean(0), x[tr].std(0, ddof=1)
    start = time.perf_counter()
    ref = LogisticRegression(C=chosen_c, max_iter=5000, tol=1e-8).fit((x[tr] - mu) / sd, y[tr])
    sec = time.perf_counter() - start
    rows.append({"setting": f"sklearn lbfgs C={chosen_c:g}", "seconds": sec, "val_score": None,
                 "test_auroc": macro_auroc(y[te], ref.predict_proba((x[te] - mu) / sd)), "C": chosen_c,
                 "weight_decay": None, "epoch_or_iters": int(ref.n_iter_[0])})
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"linear probe: {args.n} x {args.dim}, {args.classes} classes, 1 thread, load {' '.join(load)}")
    print(f"{'setting':28s} {'s':>7s} {'test AUROC':>10s} {'C':>7s} {'iters':>6s}")
    for r in rows:
        c = f"{r['C']:g}" if r["C"] is not None else "-"
        print(f"{r['setting']:28s} {r['seconds']:7.2f} {r['test_auroc']:10.4f} {c:>7s} {r['epoch_or_iters']:6d}")
    diff = abs(rows[0]["test_auroc"] - rows[-1]["test_auroc"])
    print(f"|default - sklearn| test AUROC = {diff:.5f}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "bench_linear.json").write_text(json.dumps(
        {**vars(args), "loadavg": load, "results": rows, "abs_diff_vs_sklearn": diff}, indent=2))


if __name__ == "__main__":
    main()
