"""Pretraining throughput: images/s and model-FLOPs utilisation of the real training step.

Runs ``Trainer.train_step`` (student + teacher, all loss terms, AdamW, EMA) on synthetic
pre-collated batches, so the number is the model's speed, not the JPEG decoder's. Device
auto: CPU here (small crops), the GPU when there is one (bf16, paper crops available).

    python benchmarks/bench_pretrain.py                       # tiny + small, 112/56 crops
    python benchmarks/bench_pretrain.py --global-size 224 --local-size 98 --batch 64   # GPU recipe
Writes benchmarks/results/bench_pretrain_<device>.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dermino.data.masking import batch_masks
from dermino.data.transforms import CropsConfig
from dermino.models.heads import HeadConfig
from dermino.pretrain.config import ModelConfig, PretrainConfig, RunConfig, ScheduleConfig
from dermino.pretrain.trainer import Trainer

HERE = Path(__file__).resolve().parent
N_CLASSES = 10


def synthetic_batch(cfg: PretrainConfig, seed: int) -> dict:
    b, c = cfg.schedule.batch_size, cfg.crops
    g = torch.Generator().manual_seed(seed)
    grid = (c.global_size // 14, c.global_size // 14)
    targets = torch.zeros(b, N_CLASSES)
    targets[torch.arange(b), torch.arange(b) % N_CLASSES] = 1
    return {
        "global_crops": torch.randn(2 * b, 3, c.global_size, c.global_size, generator=g),
        "local_crops": torch.randn(c.n_local * b, 3, c.local_size, c.local_size, generator=g) if c.n_local else None,
        "masks": batch_masks(2 * b, grid, cfg.masking, np.random.default_rng(seed)),
        "targets": targets,
        "label_mask": torch.ones(b, N_CLASSES),
        "n_global": 2,
        "n_local": c.n_local,
    }


def bench(size: str, args: argparse.Namespace, out_dir: Path) -> dict:
    cfg = PretrainConfig()
    cfg.model = ModelConfig(arch=f"dermino_vit_{size}_14", drop_path_rate=0.1,
                            heads=HeadConfig(out_dim=args.prototypes))
    cfg.crops = CropsConfig(global_size=args.global_size, local_size=args.local_size, n_local=args.n_local)
    cfg.losses.knowledge.prototypes = "random"
    cfg.schedule = ScheduleConfig(batch_size=args.batch, budget_steps=1000)
    cfg.optim.freeze_last_layer_epochs = 0
    precision = args.precision if args.precision != "auto" else ("bf16" if torch.cuda.is_available() else "fp32")
    cfg.run = RunConfig(out_dir=str(out_dir), device=args.device, precision=precision, compile=args.compile,
                        progress=False, peak_tflops=args.peak_tflops)
    n = 4 * args.batch
    df = pd.DataFrame({"image": [f"x{i}.jpg" for i in range(n)], "source": "synthetic",
                       "labels": [f"c{i % N_CLASSES}" for i in range(n)],
                       "label_space": ";".join(f"c{i}" for i in range(N_CLASSES))})
    trainer = Trainer(cfg, df=df)
    batches = [synthetic_batch(cfg, s) for s in range(2)]
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    for i in range(args.warmup):
        trainer.train_step([batches[i % 2]])
    sync()
    start = time.perf_counter()
    for i in range(args.steps):
        trainer.train_step([batches[i % 2]])
    sync()
    sec = (time.perf_counter() - start) / args.steps
    ips = args.batch / sec
    achieved = ips * trainer.flops_per_image / 1e12
    mem = torch.cuda.max_memory_allocated() / 2**30 if trainer.device.type == "cuda" else None
    return {
        "model": size, "device": str(trainer.device), "precision": precision, "compile": args.compile,
        "crops": f"2x{args.global_size}+{args.n_local}x{args.local_size}", "batch": args.batch,
        "prototypes": args.prototypes, "step_s": sec, "images_per_s": ips,
        "gflop_per_image": trainer.flops_per_image / 1e9, "achieved_tflops": achieved,
        "peak_tflops": trainer.peak, "mfu": achieved / trainer.peak, "max_mem_gib": mem,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,small")
    ap.add_argument("--global-size", type=int, default=112)
    ap.add_argument("--local-size", type=int, default=56)
    ap.add_argument("--n-local", type=int, default=8)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--prototypes", type=int, default=65536)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: by device)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.models.split(","):
            rows.append(bench(size.strip(), args, Path(tmp) / size))
            r = rows[-1]
            print(f"{r['model']:>6} {r['device']:>7} {r['precision']:>5} {r['crops']:>12} b={r['batch']:<4} "
                  f"{r['images_per_s']:8.1f} img/s  {r['step_s'] * 1000:8.1f} ms/step  "
                  f"{r['gflop_per_image']:7.1f} GFLOP/img  {r['achieved_tflops']:7.3f} TFLOP/s  MFU {r['mfu']:6.1%}",
                  flush=True)
    dev = rows[0]["device"].split(":")[0] if rows else "cpu"
    path = args.json or HERE / "results" / f"bench_pretrain_{dev}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
