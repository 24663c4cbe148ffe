"""Dedup throughput and duplicates among HAM10000, ISIC 2017 and PH2 (the public copies).

    nice -n 10 python benchmarks/dedup_throughput.py --data ../shared/data

Builds the three manifests with their adapters, runs ``find_duplicates`` over all of them
(HAM10000 + ISIC 2017 as corpus, PH2 as the evaluation set), and reports images/s per stage,
peak memory (RSS), and a projection to 500,000 images: hashing and descriptors are linear;
the candidate stage is measured at 1/4, 1/2 and all of the images and its growth exponent
fitted. Hashes are cached under benchmarks/results/dedup_cache, so a killed run resumes.
Writes benchmarks/results/dedup_throughput.json and the review report beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

from dermino.data import dedup
from dermino.data.adapters import build
from dermino.data.manifest import write_manifest

HERE = Path(__file__).resolve().parent
TARGET = 500_000


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=os.environ.get("DERMINO_SHARED_DATA"), required=False,
                    help="folder holding ham10000/, isic2017/, ph2/ in their published layouts")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--resume", action="store_true",
                    help="keep the hash cache of an earlier (killed) run; the default starts cold so "
                         "hashing speed is measured")
    args = ap.parse_args()
    if not args.data:
        ap.error("--data (or DERMINO_SHARED_DATA) is required")
    out = Path(args.out)
    mans = {}
    for name in ("ham10000", "isic2017", "ph2"):
        df = build(name, Path(args.data) / name)
        df["split"] = df["split"].replace("", "none")
        mans[name] = write_manifest(df, out / "dedup_manifests" / f"{name}.csv")
    cfg = dedup.DedupConfig(cache_dir=str(out / "dedup_cache"), workers=args.workers)
    if not args.resume:
        shutil.rmtree(out / "dedup_cache", ignore_errors=True)
    table, _ = dedup._roles_table([mans["ham10000"], mans["isic2017"]], [mans["ph2"]])
    paths = [Path(p) for p in table.path]
    n = len(paths)
    t0 = time.perf_counter()
    hashes = dedup.compute_hashes(paths, cfg)
    t_hash = time.perf_counter() - t0
    h = hashes["phash"].to_numpy().astype(np.uint64)
    scaling = []
    rng = np.random.default_rng(0)
    for frac in (0.25, 0.5, 1.0):
        sub = h[rng.permutation(n)[: int(n * frac)]] if frac < 1 else h
        t0 = time.perf_counter()
        pairs, _ = dedup.candidate_pairs(sub, cfg.max_hamming, cfg.probe_radius, cfg.max_bucket, cfg.per_image)
        sec = time.perf_counter() - t0
        uncapped = len(dedup.candidate_pairs(sub, cfg.max_hamming, cfg.probe_radius, cfg.max_bucket)[0])
        scaling.append({"images": len(sub), "candidate_pairs": int(len(pairs)), "uncapped_pairs": int(uncapped),
                        "seconds": sec, "peak_rss_mb": rss_mb()})
    t_desc = time.perf_counter()
    dedup.detail_embedder(paths[:500])
    desc_per_s = 500 / (time.perf_counter() - t_desc)
    t0 = time.perf_counter()
    res = dedup.find_duplicates([mans["ham10000"], mans["isic2017"]], [mans["ph2"]], cfg)
    t_total = time.perf_counter() - t0  # hashes come from the cache: candidates + descriptors
    written = dedup.write_outputs(res, out / "dedup_report")
    a = np.polyfit(np.log([s["images"] for s in scaling]), np.log([max(s["candidate_pairs"], 1) for s in scaling]), 1)[0]
    time_exp = np.polyfit(np.log([s["images"] for s in scaling]), np.log([s["seconds"] for s in scaling]), 1)[0]
    # the per-image cap bounds confirmed-candidate pairs by per_image * N whatever the fit says
    pairs_at_target = min(scaling[-1]["candidate_pairs"] * (TARGET / n) ** a, cfg.per_image * TARGET)
    per_image_bytes = res.table.memory_usage(deep=True).sum() / n
    cand_images = len(np.unique(dedup.candidate_pairs(h, cfg.max_hamming, cfg.probe_radius, cfg.max_bucket,
                                                      cfg.per_image)[0]))
    desc_s = max(t_total - scaling[-1]["seconds"], 1e-9)
    summary = {
        "images": n, "hash_seconds": t_hash, "hash_images_per_s": n / t_hash,
        "candidate_scaling": scaling, "candidate_growth_exponent": float(a),
        "candidate_time_exponent": float(time_exp),
        "confirm_seconds": desc_s, "descriptor_images_per_s": desc_per_s, "images_described": int(cand_images),
        "end_to_end_images_per_s_cold": n / (t_hash + t_total),
        "peak_rss_mb": rss_mb(), "table_bytes_per_image": float(per_image_bytes),
        "projection_500k": {
            "hash_hours_1_core": TARGET / (n / t_hash) / 3600,
            "candidate_pairs": float(pairs_at_target),
            "candidate_seconds": scaling[-1]["seconds"] * (TARGET / n) ** max(time_exp, 1.0),
            "images_described": cand_images * TARGET / n,
            "confirm_hours_1_core": desc_s * TARGET / n / 3600,
            "table_mb": per_image_bytes * TARGET / 2**20,
            "pair_arrays_mb": pairs_at_target * 24 / 2**20,
        },
        "stats": {k: v for k, v in res.stats.items() if k != "config"},
        "examples": res.pairs.sort_values("cosine").groupby(["roles", "kind"]).head(3)[
            ["kind", "roles", "source_i", "path_i", "source_j", "path_j", "hamming", "cosine"]].to_dict("records"),
        "report": str(written["report"]),
    }
    (out / "dedup_throughput.json").write_text(json.dumps(summary, indent=2, default=str))
    print(f"{'stage':<28}{'value':>14}")
    print(f"{'images':<28}{n:>14}")
    print(f"{'hash images/s (1 proc)':<28}{n / t_hash:>14.0f}")
    for s in scaling:
        print(f"{'candidates @' + str(s['images']):<28}{s['candidate_pairs']:>14} ({s['seconds']:.2f}s, "
              f"{s['uncapped_pairs']} before the per-image cap)")
    print(f"{'pairs growth exponent':<28}{a:>14.2f}")
    print(f"{'time growth exponent':<28}{time_exp:>14.2f}")
    print(f"{'confirm seconds':<28}{desc_s:>14.1f}")
    print(f"{'peak RSS MB':<28}{rss_mb():>14.0f}")
    print(json.dumps(summary["projection_500k"], indent=2))
    print(json.dumps(summary["stats"], indent=2, default=str))


if __name__ == "__main__":
    main()
