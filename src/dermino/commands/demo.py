"""``dermino demo``: the whole workflow on the bundled real images, with a report."""

from __future__ import annotations

import argparse
import os

from dermino.config import load_config
from dermino.demo import DemoConfig, quick, run_demo


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="the whole workflow on the bundled real images, with a report")
    p.add_argument("--out", help="output folder (default demo_output)")
    p.add_argument("--config", help="YAML with DemoConfig fields")
    p.add_argument("--full", action="store_true", help="full-size data from data=PATH or $DERMINO_DATA (ham10000/, ph2/, isic2017/) "
                   "and a larger budget")
    p.add_argument("--quick", action="store_true", help="tiny budget: a smoke test of every step")
    p.add_argument("overrides", nargs="*", help="key=value overrides of DemoConfig, e.g. pretrain_images=5000")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(DemoConfig, args.config, args.overrides)
    if args.out:
        cfg.out = args.out
    if args.full:
        cfg.data = cfg.data or os.environ.get("DERMINO_DATA", "")
        if not cfg.data:
            raise ValueError("--full needs the published datasets: pass data=PATH (a folder holding ham10000/, "
                             "ph2/ and isic2017/) or set DERMINO_DATA")
        cfg.pretrain_images = max(cfg.pretrain_images, 20000)
    if args.quick:
        quick(cfg)
    run_demo(cfg)
    return 0
