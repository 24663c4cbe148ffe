"""Embedding throughput under torchrun: images/s for 1, 2 and 4 processes and the scaling efficiency.

Each row launches ``torchrun --standalone --nproc_per_node N`` on this script in ``--worker`` mode,
which does what ``dermino embed`` does (create the backbone, ``extract_embeddings`` with this
rank's shard, into an empty cache) and times the shared part: from a barrier once every rank has
loaded the model until rank 0 holds the merged array. Process start-up (importing torch takes
seconds on a busy machine) is reported beside it, not mixed into the rate:

    images/s = images / embedding seconds
    efficiency = (images/s with N processes) / (N * images/s with 1 process)

Every process gets ``--threads`` threads (default 1), so on a machine with fewer cores than
processes the efficiency is bounded by cores / N. The merged arrays are checked to be identical
for every process count. Writes benchmarks/results/bench_embed_scaling.json.

    python benchmarks/bench_embed_scaling.py                         # CPU, bundled sample, 1/2/4 processes
    python benchmarks/bench_embed_scaling.py --device cuda --processes 1,8 --backbone dermino_vit_base_14 \\
        --model-arg --image-size 224 --batch-size 128 --chunk-size 1024 --tile 20   # a GPU node
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, TINY_ARCH, benchmark_parser, load_average, report, start, write_json


def _manifest(args, folder: Path) -> tuple[Path, int]:
    """The manifest to embed (the bundled sample by default), its rows repeated ``--tile`` times."""
    import pandas as pd

    from dermino.data.manifest import read_manifest, write_manifest
    from dermino.data.sample import sample_manifests

    sources = [Path(args.manifest)] if args.manifest else list(sample_manifests(folder / "sample").values())
    frames = []
    for m in sources:
        df = read_manifest(m)
        # absolute paths, so manifests with different roots concatenate (masks are not needed)
        df = df.assign(image=[str(Path(df.attrs["root"]) / v) for v in df.image], mask="")
        frames.append(df)
    df = pd.concat(frames * args.tile, ignore_index=True)
    return write_manifest(df, folder / "embed_scaling.csv", root="/"), len(df)


def _weights(args, folder: Path) -> Path:
    """``--weights``, else the backbone's random initialisation saved once: every rank loads the same model."""
    if args.weights:
        return Path(args.weights)
    import torch
    import yaml
    from safetensors.torch import save_file

    from dermino.models import create

    torch.manual_seed(0)
    kwargs = {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in args.model_arg)}
    path = folder / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in create(args.backbone, **kwargs).state_dict().items()}, str(path))
    return path


def _launch(args, nproc: int, manifest: Path, weights: Path, folder: Path) -> tuple[float, dict]:
    """One torchrun job of ``nproc`` workers into an empty cache; (wall seconds, rank 0's result)."""
    result = folder / "result.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(Path(__file__).resolve()), "--worker", "--manifest", str(manifest), "--weights", str(weights),
           "--out", str(result),
           "--backbone", args.backbone, "--model-arg", *args.model_arg, "--image-size", str(args.image_size),
           "--batch-size", str(args.batch_size), "--chunk-size", str(args.chunk_size),
           "--workers", str(args.workers), "--device", args.device, "--threads", str(args.threads)]
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1"}
    t = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - t
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-4000:]}")
    return wall, json.loads(result.read_text())


def _worker(args) -> None:
    """One rank: the work of ``dermino embed`` with a timed shared part (rank 0 writes the result)."""
    import hashlib

    import torch.distributed as dist
    import yaml

    from dermino.data.manifest import read_manifest
    from dermino.features import EmbedConfig, extract_embeddings
    from dermino.models import create
    from dermino.sharding import torchrun_shard

    out = Path(args.out)
    cfg = EmbedConfig(image_size=args.image_size, batch_size=args.batch_size, chunk_size=args.chunk_size,
                      num_workers=args.workers, device=args.device, cache_dir=str(out.parent / "cache"))
    kwargs = {k: yaml.safe_load(v) for k, v in (a.split("=", 1) for a in args.model_arg)}
    df = read_manifest(args.manifest)
    with torchrun_shard(cfg.device) as shard:
        cfg.device = shard.device(cfg.device)
        model = create(args.backbone, weights=args.weights, **kwargs)
        if shard.enabled:
            dist.barrier()
        t = time.perf_counter()
        emb = extract_embeddings(model, df, cfg, weights=args.weights, model_name=args.backbone,
                                 progress=False, shard=shard)
        seconds = time.perf_counter() - t
    if shard.is_main:
        write_json({"seconds": seconds, "computed_rows": emb.computed_rows, "rows": len(emb.features),
                    "sha256": hashlib.sha256(emb.features.tobytes()).hexdigest()}, out)


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--processes", default="1,2,4", help="comma-separated process counts (the first is the base)")
    ap.add_argument("--manifest", default="", help="manifest to embed (default: the bundled sample, 563 images)")
    ap.add_argument("--tile", type=int, default=1, help="repeat the manifest's rows this many times")
    ap.add_argument("--backbone", default="dermino_vit_tiny_14")
    ap.add_argument("--model-arg", nargs="*", default=[f"{k}={v}" for k, v in TINY_ARCH.items()],
                    help="backbone constructor overrides (default: the tiny CPU ViT of configs/pretrain/tiny_cpu.yaml)")
    ap.add_argument("--weights", default="", help="checkpoint (default: the random initialisation, saved once)")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--chunk-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (each rank its own GPU)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per torchrun launch")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # one rank of a launch
    args = ap.parse_args()
    start(args)
    if args.worker:
        _worker(args)
        return
    counts = [int(n) for n in args.processes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        folder = Path(d)
        manifest, n = _manifest(args, folder)
        weights = _weights(args, folder)
        reference = None
        for nproc in counts:
            wall, res = _launch(args, nproc, manifest, weights, folder / f"p{nproc}")
            if res["computed_rows"] != n:
                raise SystemExit(f"{nproc} processes computed {res['computed_rows']} of {n} rows")
            reference = reference or res["sha256"]
            rows.append({"processes": nproc, "images": n, "embed_s": res["seconds"],
                         "images_per_s": n / res["seconds"], "launch_s": wall,
                         "identical": res["sha256"] == reference, "load": load_average()})
            print(f"{nproc} process(es): {n / res['seconds']:.1f} images/s ({res['seconds']:.1f} s embedding, "
                  f"{wall:.1f} s with start-up), load {load_average()}", flush=True)
    base = rows[0]["images_per_s"] / rows[0]["processes"]
    for r in rows:
        r["efficiency"] = r["images_per_s"] / (r["processes"] * base)
    report(__file__, args, f"dermino embed under torchrun: {args.backbone} at {args.image_size} px, {n} images, "
           f"device {args.device}, {os.cpu_count()} CPU core(s)", rows,
           [("processes", "processes", "d"), ("images_per_s", "images/s", ".1f"), ("efficiency", "efficiency", ".0%"),
            ("embed_s", "embed s", ".1f"), ("launch_s", "with start-up s", ".1f"), ("identical", "same array", "")],
           cpu_count=os.cpu_count())


if __name__ == "__main__":
    main()
