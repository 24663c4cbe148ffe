"""``dermino zero-shot``: diagnose from disease names through the trained knowledge head."""

from __future__ import annotations

import argparse
import json

from dermino.evaluate.zero_shot import ZeroShotConfig, format_zero_shot, run_zero_shot
from dermino.features import EmbedConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("zero-shot", help="diagnose from disease names through the trained knowledge head")
    p.add_argument("manifest", help="labelled manifest to score (e.g. PH2)")
    p.add_argument("--weights", required=True, help="teacher_backbone.pt exported by `dermino pretrain`")
    p.add_argument("--model", default="dermino_vit_tiny_14", help="registry name of the backbone")
    p.add_argument("--overrides", default="", help='architecture overrides as JSON, e.g. \'{"depth": 4}\'')
    p.add_argument("--head", default="", help="knowledge head file (default: next to --weights)")
    p.add_argument("--prompt", action="append", metavar="LABEL=TEXT",
                   help="text scored for a label (repeatable), e.g. 'melanoma=malignant melanoma'")
    p.add_argument("--split", action="append", help="only rows of this manifest split (repeatable)")
    p.add_argument("--encoder", default="", help="text encoder (default: the one recorded in the head file)")
    p.add_argument("--pooling", choices=["mean", "cls"], default=None, help="default: recorded in the head file")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--cache-dir", default="", help="embedding cache (default: $DERMINO_CACHE/embeddings)")
    p.add_argument("--bootstrap", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write results JSON here (e.g. runs/eval/results)")
    p.set_defaults(func=cmd_zero_shot)


def _parse_prompts(items: list[str]) -> dict[str, str]:
    prompts = {}
    for item in items:
        label, sep, text = item.partition("=")
        if not sep or not label.strip() or not text.strip():
            raise ValueError(f"--prompt expects LABEL=TEXT, got {item!r}")
        prompts[label.strip()] = text.strip()
    return prompts


def cmd_zero_shot(args: argparse.Namespace) -> int:
    cfg = ZeroShotConfig(head=args.head or "", prompts=_parse_prompts(args.prompt or []), splits=args.split or [],
                         encoder=args.encoder or "", pooling=args.pooling or "")
    overrides = json.loads(args.overrides) if args.overrides else {}
    embed = EmbedConfig(image_size=args.image_size, cache_dir=args.cache_dir)
    res = run_zero_shot(args.model, args.weights, args.manifest, cfg, overrides=overrides, embed=embed,
                        bootstrap=args.bootstrap, seed=args.seed, out_dir=args.out, progress=True)
    print(format_zero_shot(res))
    return 0
