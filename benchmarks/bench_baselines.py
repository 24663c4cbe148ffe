"""Time and peak memory to embed N HAM10000 images with every named comparator, at its own resolution.

Each model runs in its own process (so its peak resident memory is its own), with random
weights (this measures wiring and cost, not quality), one thread, through ``dermino.load``
with the model's published preprocessing and its default feature (``pool='auto'``). Prints
a table with the machine's load average and writes benchmarks/results/bench_baselines.json.

    python benchmarks/bench_baselines.py --n 50                       # every comparator
    python benchmarks/bench_baselines.py --n 20 --models clip_vit_b16 dinov3_vits16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from _common import RESULTS, add_data_argument, load_average, write_json


def _images(data: Path, n: int) -> list[Path]:
    folder = data / "ham10000" / "images" if (data / "ham10000").is_dir() else data / "images"
    images = sorted(folder.glob("*.jpg"))[:n]
    if len(images) < n:
        raise SystemExit(f"found {len(images)} HAM10000 images under {folder}, need {n}")
    return images


def run_one(name: str, images: list[Path], batch: int) -> dict:
    """Build ``name`` (random weights), embed ``images``; runs inside the child process."""
    import torch

    import dermino

    torch.set_num_threads(1)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = dermino.load(name)
    build_s = time.perf_counter() - t0
    model.embed(images[:1], batch_size=1)  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    feats = model.embed(images, batch_size=batch)
    embed_s = time.perf_counter() - t0
    pre = model.config["preprocessing"] or {}
    return {
        "name": name, "n": len(images), "image_size": model.transform.image_size,
        "resize_mode": model.transform.resize_mode, "dim": int(feats.shape[1]),
        "params_m": round(sum(p.numel() for p in model.backbone.parameters()) / 1e6, 1),
        "pool": pre.get("pool", "cls"), "build_s": round(build_s, 2), "embed_s": round(embed_s, 2),
        "s_per_image": round(embed_s / len(images), 3),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--n", type=int, default=50, help="images to embed per model (the issue asks for 1,000)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--models", nargs="*", help="registered names (default: every comparator with a card)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per model")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child process: one model, JSON on stdout
    ap.add_argument("--out", type=Path, default=RESULTS / "bench_baselines.json")
    args = ap.parse_args()
    if not args.data:
        args.data = str(Path(__file__).resolve().parents[2] / "shared" / "data")
    images = _images(Path(args.data), args.n)
    if args.one:
        print(json.dumps(run_one(args.one, images, args.batch)))
        return

    from dermino.models.baselines import CARDS

    names = args.models or sorted(n for n, c in CARDS.items() if c.status == "ready")
    rows = []
    for name in names:
        load = load_average()
        cmd = [sys.executable, __file__, "--one", name, "--n", str(args.n), "--batch", str(args.batch),
               "--data", args.data]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
        except subprocess.TimeoutExpired:
            rows.append({"name": name, "error": f"timeout after {args.timeout} s", "load_before": load})
            print(f"{name:24s} timeout", flush=True)
            continue
        if done.returncode != 0:
            rows.append({"name": name, "error": done.stderr.strip().splitlines()[-1:], "load_before": load})
            print(f"{name:24s} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            continue
        row = {**json.loads(done.stdout.strip().splitlines()[-1]), "load_before": load, "load_after": load_average()}
        rows.append(row)
        print(f"{name:24s} {row['image_size']:4d} px  {row['params_m']:7.1f} M  {row['s_per_image']:7.3f} s/img  "
              f"peak {row['peak_rss_gb']:5.2f} GB  load {load} -> {row['load_after']}", flush=True)
    write_json({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "threads": 1,
                "n": args.n, "batch": args.batch, "weights": "random (cost and wiring, not quality)",
                "loadavg": Path("/proc/loadavg").read_text().strip(), "rows": rows}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
