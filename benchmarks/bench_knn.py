"""kNN (k=5, cosine, chunked matmul) over a 100,000 x 768 feature bank.

Writes benchmarks/results/bench_knn.json.
"""

from __future__ import annotations

import time

import numpy as np
from _common import benchmark_parser, report, start

from dermino.evaluate.knn import KNNConfig, knn_classify


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--bank", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=5_000)
    ap.add_argument("--classes", type=int, default=7)
    args = ap.parse_args()
    start(args)
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((args.bank, args.dim), dtype=np.float32)
    labels = rng.integers(0, args.classes, size=args.bank)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    rows = []
    for chunk in (256, 1024, 4096):
        t0 = time.perf_counter()
        knn_classify(bank, labels, queries, args.classes, KNNConfig(chunk_size=chunk))
        sec = time.perf_counter() - t0
        gflop = 2 * args.bank * args.queries * args.dim / 1e9
        rows.append({"chunk": chunk, "seconds": sec, "queries_per_s": args.queries / sec, "gflop_per_s": gflop / sec})
    report(__file__, args, f"kNN k=5 cosine: bank {args.bank} x {args.dim}, {args.queries} queries", rows,
           [("chunk", "chunk", "d"), ("seconds", "s", ".2f"), ("queries_per_s", "queries/s", ".0f"),
            ("gflop_per_s", "GFLOP/s", ".1f")])


if __name__ == "__main__":
    main()
