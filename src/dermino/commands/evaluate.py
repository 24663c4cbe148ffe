"""``dermino evaluate --config configs/eval/X.yaml [key=value ...]``."""

from __future__ import annotations

import argparse

from dermino.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate", help="kNN / linear / few-shot / fairness evaluation of backbones on manifests",
        description="Run backbones x datasets x protocols from a YAML config; write results JSON, "
        "tables and plots under out_dir.",
    )
    p.add_argument("--config", required=True, help="configs/eval/*.yaml")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. bootstrap=200 embed.batch_size=32")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dermino.evaluate.config import EvalConfig
    from dermino.evaluate.runner import run_evaluation

    cfg = load_config(EvalConfig, args.config, args.overrides)
    out = run_evaluation(cfg)
    print(f"results: {out / 'results'}\ntable:   {out / 'tables' / 'summary.md'}")
    print((out / "tables" / "summary.md").read_text())
    return 0
