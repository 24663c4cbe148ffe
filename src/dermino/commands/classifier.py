"""``dermino classifier train``: a calibrated diagnosis head saved as one folder."""

from __future__ import annotations

import argparse
import json

from dermino.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "classifier", help="train a calibrated diagnosis head on a frozen backbone",
        description="Linear head on frozen features; weight decay, epoch and temperature chosen on a "
        "validation split carved from train by lesion; test metrics with bootstrap CIs and ECE "
        "before/after temperature scaling. Output: one folder (safetensors + JSON) for 'dermino serve'.",
    )
    sub = p.add_subparsers(dest="classifier_command", metavar="ACTION")
    sub.required = True
    t = sub.add_parser("train", help="train, calibrate, evaluate, save")
    t.add_argument("--config", help="a YAML file with ClassifierConfig keys")
    t.add_argument("--manifest", help="manifest with labels and split columns")
    t.add_argument("--backbone", help="registry name, e.g. dermino_vit_base_14")
    t.add_argument("--weights", help="local backbone checkpoint")
    t.add_argument("--out", help="output folder (default runs/classifier)")
    t.add_argument("overrides", nargs="*",
                   help="dotted overrides, e.g. positive=melanoma image_size=112 backbone_overrides.img_size=112")
    t.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from dermino.classifier.train import ClassifierConfig, train_classifier

    flags = {key: getattr(args, key) for key in ("manifest", "backbone", "weights", "out")}
    cfg = load_config(ClassifierConfig, args.config, args.overrides, flags=flags)  # runs every declared check
    out = train_classifier(cfg)
    info = json.loads((out / "classifier.json").read_text())
    cal = info["calibration"]
    print(f"classifier: {out}")
    print(f"  temperature {cal['temperature']:.3f} (fitted on val)")
    if "ece_before" in cal:
        print(f"  test ECE {cal['ece_before']:.4f} -> {cal['ece_after']:.4f}  (diagram: {out / cal['diagram']})")
    for name, m in info["metrics"].items():
        if m["ci_low"] is not None:
            print(f"  {name:18s} {m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] (n={m['n']})")
    return 0
