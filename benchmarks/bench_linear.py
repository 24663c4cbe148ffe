"""Linear probe recipes on synthetic N x D features: time, validation score and agreement with scikit-learn.

Rows: the default (L-BFGS, C swept on validation), the paper's Adam recipe with mini-batches,
Adam full batch (the old default: 50 epochs = 50 steps), and scikit-learn's LogisticRegression
at the C our sweep chose (the reference the default must match within 0.005 AUROC).
Writes benchmarks/results/bench_linear.json.
"""

from __future__ import annotations

import time

import numpy as np
from _common import benchmark_parser, report, start

from dermino.evaluate.linear import LinearConfig, fit_linear_probe
from dermino.evaluate.metrics import macro_auroc


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--classes", type=int, default=7)
    args = ap.parse_args()
    start(args)
    rng = np.random.default_rng(0)
    y = rng.integers(0, args.classes, size=args.n)
    x = (rng.standard_normal((args.n, args.dim)) + 0.1 * rng.standard_normal((args.classes, args.dim))[y])
    x = x.astype(np.float32)
    n_val, n_test = args.n // 8, args.n // 4
    te, va, tr = slice(0, n_test), slice(n_test, n_test + n_val), slice(n_test + n_val, None)
    rows = []
    chosen_c = None
    for name, cfg in (
        ("lbfgs, C swept (default)", LinearConfig()),
        ("adam mini-batch 256", LinearConfig(method="adam")),
        ("adam full batch (old)", LinearConfig(method="adam", batch_size=0)),
    ):
        t0 = time.perf_counter()
        probe = fit_linear_probe(x[tr], y[tr], args.classes, x[va], y[va], cfg)
        sec = time.perf_counter() - t0
        chosen_c = chosen_c or probe.C
        rows.append({"setting": name, "seconds": sec, "test_auroc": macro_auroc(y[te], probe.predict_proba(x[te])),
                     "C": f"{probe.C:g}" if probe.C is not None else "-", "iters": probe.epoch})
    from sklearn.linear_model import LogisticRegression

    mu, sd = x[tr].mean(0), x[tr].std(0, ddof=1)
    t0 = time.perf_counter()
    ref = LogisticRegression(C=chosen_c, max_iter=5000, tol=1e-8).fit((x[tr] - mu) / sd, y[tr])
    rows.append({"setting": f"sklearn lbfgs C={chosen_c:g}", "seconds": time.perf_counter() - t0,
                 "test_auroc": macro_auroc(y[te], ref.predict_proba((x[te] - mu) / sd)), "C": f"{chosen_c:g}",
                 "iters": int(ref.n_iter_[0])})
    diff = abs(rows[0]["test_auroc"] - rows[-1]["test_auroc"])
    report(__file__, args, f"linear probe: {args.n} x {args.dim}, {args.classes} classes; "
           f"|default - sklearn| test AUROC = {diff:.5f}", rows,
           [("setting", "setting", "28s"), ("seconds", "s", ".2f"), ("test_auroc", "test AUROC", ".4f"),
            ("C", "C", ">7s"), ("iters", "iters", "d")], abs_diff_vs_sklearn=diff)


if __name__ == "__main__":
    main()
