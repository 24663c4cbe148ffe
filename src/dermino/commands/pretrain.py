"""``dermino pretrain --config X.yaml [--resume] [--out DIR] [key=value ...]``.

Multi-GPU: ``torchrun --nproc_per_node=N -m dermino.cli pretrain --config X.yaml``.
Ablations are overrides, e.g. ``losses.knowledge.enabled=false`` (rows listed in configs/pretrain/dermino_vitb14.yaml).
"""

from __future__ import annotations

import argparse
import sys

from dermino.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("pretrain", help="hybrid self-supervised + knowledge-guided pretraining",
                              description="Pretrain a ViT with DINO + iBOT + KoLeo + knowledge-guided losses.")
    p.add_argument("--config", required=True, help="YAML config (configs/pretrain/*.yaml)")
    p.add_argument("--out", default=None, help="output directory (overrides run.out_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in the output dir (with the same config)")
    p.add_argument("--resume-from", default=None, metavar="PATH",
                   help="continue from this checkpoint (the rescue after a divergence: optim.base_lr / optim.min_lr "
                        "may change; newer checkpoints are moved to checkpoints/diverged/)")
    p.add_argument("--allow-config-change", nargs="+", default=[], metavar="KEY",
                   help="on resume, accept these changed config keys (e.g. schedule.budget_steps); "
                        "anything else that changes the trajectory is refused")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from dermino.pretrain.config import PretrainConfig
    from dermino.pretrain.trainer import BadStepsError, pretrain

    # ``--allow-config-change`` takes several keys; overrides written after it are still overrides
    allow = [k for k in args.allow_config_change if "=" not in k]
    overrides = list(args.overrides) + [k for k in args.allow_config_change if "=" in k]
    if args.out:
        overrides.append(f"run.out_dir={args.out}")
    cfg = load_config(PretrainConfig, args.config, overrides)
    try:
        out = pretrain(cfg, resume=args.resume, resume_from=args.resume_from, allow_config_change=allow)
    except BadStepsError as exc:  # a diverged run: one line naming the checkpoint to go back to
        print(f"dermino pretrain: error: {exc}", file=sys.stderr)
        return 2
    print(f"pretraining done: {out}")
    return 0
