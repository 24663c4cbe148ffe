"""``dermino evaluate --config configs/eval/X.yaml [--preset NAME] [key=value ...]``."""

from __future__ import annotations

import argparse

from dermino.evaluate.presets import PRESETS, describe_presets


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="kNN / linear / few-shot / fairness evaluation of backbones on manifests",
        description="Run backbones x datasets x protocols from a YAML config; write results JSON, "
        "tables and plots under out_dir.",
    )
    p.add_argument("--config", help="configs/eval/*.yaml (backbones and datasets; keys override the preset)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="",
                   help=f"named protocol set (docs/evaluation.md): {describe_presets()}")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. bootstrap=200 embed.batch_size=32")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dermino.evaluate.presets import load_eval_config
    from dermino.evaluate.runner import run_evaluation

    if not args.config and not args.preset:
        raise ValueError("evaluate: give --config (and optionally --preset)")
    cfg = load_eval_config(args.config, args.overrides, args.preset)
    out = run_evaluation(cfg)
    print(f"results: {out / 'results'}\ntable:   {out / 'tables' / 'summary.md'}")
    print((out / "tables" / "summary.md").read_text())
    return 0
