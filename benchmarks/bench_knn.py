"""kNN (k=5, cosine, chunked matmul) over a 100,000 x 768 feature bank.

Writes benchmarks/results/bench_knn.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from dermino.evaluate.knn import KNNConfig, knn_classify

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bank", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=5_000)
    ap.add_argument("--classes", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((args.bank, args.dim), dtype=np.float32)
    labels = rng.integers(0, args.classes, size=args.bank)
    queries = rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    rows = []
    for chunk in (256, 1024, 4096):
        start = time.perf_counter()
        knn_classify(bank, labels, queries, args.classes, KNNConfig(chunk_size=chunk))
        sec = time.perf_counter() - start
        gflop = 2 * args.bank * args.queries * args.dim / 1e9
        rows.append({"chunk": chunk, "seconds": sec, "queries_per_s": args.queries / sec,
                     "gflop_per_s": gflop / sec})
    print(f"kNN k=5 cosine: bank {args.bank} x {args.dim}, {args.queries} queries, 2 threads")
    print(f"{'chunk':>6s} {'s':>7s} {'queries/s':>10s} {'GFLOP/s':>8s}")
    for r in rows:
        print(f"{r['chunk']:6d} {r['seconds']:7.2f} {r['queries_per_s']:10.0f} {r['gflop_per_s']:8.1f}")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "bench_knn.json").write_text(json.dumps({**vars(args), "results": rows}, indent=2))


if __name__ == "__main__":
    main()
