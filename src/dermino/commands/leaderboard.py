"""``dermino leaderboard --preset NAME --backbones a,b,c [--reference a] --config datasets.yaml``."""

from __future__ import annotations

import argparse

from dermino.evaluate.presets import PRESETS


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "leaderboard", help="backbones x datasets x protocols: resumable, tidy CSV/JSON, HTML with forest plots",
        description="Run a preset over every backbone and dataset, one resumable cell per (backbone, dataset); "
        "write leaderboard.csv/.json and report.html under out_dir. Rerun the same command to resume.",
    )
    p.add_argument("--preset", choices=sorted(PRESETS), default="dermino-paper")
    p.add_argument("--config", required=True, help="YAML with datasets (and backbone specs: weights, overrides, "
                   "corpus); keys override the preset")
    p.add_argument("--backbones", default="", help="comma-separated names: a backbone of the config, or a registry "
                   "name (default: every backbone of the config); name recipe@seedN to group pretraining seeds")
    p.add_argument("--reference", default="", help="backbone the others are compared with (default: the first)")
    p.add_argument("--out", default="", help="output folder (default: the config's out_dir)")
    p.add_argument("--allow-contaminated", action="store_true",
                   help="rank rows whose test images overlap the backbone's declared corpus above the threshold")
    p.add_argument("--contamination-threshold", type=float, default=0.05)
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. bootstrap=200")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from dermino.evaluate.config import BackboneSpec
    from dermino.evaluate.leaderboard import LeaderboardOptions, run_leaderboard
    from dermino.evaluate.presets import load_eval_config
    from dermino.report.leaderboard import write_leaderboard_report

    cfg = load_eval_config(args.config, args.overrides, args.preset)
    if args.backbones:
        known = {b.name: b for b in cfg.backbones}
        cfg.backbones = [known.get(n) or BackboneSpec(name=n, model=n.partition("@")[0])
                         for n in (s.strip() for s in args.backbones.split(",")) if n]
    if args.out:
        cfg.out_dir = args.out
    if args.reference:
        cfg.reference = args.reference
    opts = LeaderboardOptions(reference=args.reference, contamination_threshold=args.contamination_threshold,
                              allow_contaminated=args.allow_contaminated)
    out = run_leaderboard(cfg, opts)
    html, _ = write_leaderboard_report(out)
    print(f"table:  {out / 'leaderboard.csv'}\nreport: {html}")
    return 0
