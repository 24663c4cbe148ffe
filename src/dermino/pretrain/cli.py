"""``dermino pretrain --config X.yaml [--resume] [--out DIR] [key=value ...]``.

Multi-GPU: ``torchrun --nproc_per_node=N -m dermino.cli pretrain --config X.yaml``.
Ablations are overrides, e.g. ``losses.knowledge.enabled=false`` (rows listed in configs/pretrain/dermino_vitb14.yaml).
"""

from __future__ import annotations

import argparse

from dermino.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="hybrid self-supervised + knowledge-guided pretraining",
                              description="Pretrain a ViT with DINO + iBOT + KoLeo + knowledge-guided losses.")
    p.add_argument("--config", required=True, help="YAML config (configs/pretrain/*.yaml)")
    p.add_argument("--out", default=None, help="output directory (overrides run.out_dir)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the output dir")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from dermino.pretrain.config import PretrainConfig
    from dermino.pretrain.trainer import pretrain

    overrides = list(args.overrides)
    if args.out:
        overrides.append(f"run.out_dir={args.out}")
    cfg = load_config(PretrainConfig, args.config, overrides)
    out = pretrain(cfg, resume=args.resume)
    print(f"pretraining done: {out}")
    return 0
