"""``dermino compare EVAL_DIR A B``: paired comparison of two backbones of one evaluation run.

``dermino evaluate`` compares every backbone with one reference; this answers the next question
("is A better than B?", e.g. hybrid vs SSL-only) from the saved test predictions, without
recomputing features: a paired bootstrap of the metric difference on the same test images.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dermino.evaluate.compare import compare_backbones
from dermino.evaluate.metrics import CLASSIFICATION_METRICS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "compare", help="paired bootstrap comparison of two backbones of an evaluation run",
        description="For every dataset and protocol (kNN, linear) where both backbones have test "
        "predictions under EVAL_DIR, the difference A - B of a metric with its 95 %% paired-bootstrap "
        "CI and two-sided p-value.",
    )
    p.add_argument("eval_dir", help="out_dir of a dermino evaluate run (holds results/ and predictions/)")
    p.add_argument("a", help="backbone name as in the results")
    p.add_argument("b", help="backbone to compare against")
    p.add_argument("--metric", default="auroc", choices=sorted(CLASSIFICATION_METRICS))
    p.add_argument("--bootstrap", type=int, default=1000, help="resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the comparisons to this JSON file")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    rows = compare_backbones(args.eval_dir, args.a, args.b, args.metric, args.bootstrap, args.seed)
    print(f"{args.a} - {args.b}, {args.metric}: difference [95 % paired-bootstrap CI], two-sided p")
    for c in rows:
        lo, hi = c["diff_ci"]
        print(f"  {c['dataset']:<22} {c['task']:<7} {c['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]  p={c['p_value']:.3g}  n={c['n']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0
