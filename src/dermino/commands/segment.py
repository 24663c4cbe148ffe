"""``dermino segment train|evaluate|predict``: lesion segmentation on a frozen backbone."""

from __future__ import annotations

import argparse
from pathlib import Path

from dermino.config import load_config


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "segment", help="lesion segmentation heads (linear / UperNet) on a frozen backbone",
        description="Train a segmentation head on a manifest's masks, evaluate it with bootstrap CIs, "
        "or segment new images.",
    )
    sub = p.add_subparsers(dest="segment_command", metavar="ACTION")
    sub.required = True

    t = sub.add_parser("train", help="train a head; selects the best epoch on the val split")
    t.add_argument("--config", help="configs/segment/*.yaml (defaults: the paper's protocol)")
    t.add_argument("--manifest", help="manifest with mask and split columns")
    t.add_argument("--backbone", help="registry name, e.g. dermino_vit_base_14")
    t.add_argument("--weights", help="local backbone checkpoint")
    t.add_argument("--head", choices=["linear", "upernet"])
    t.add_argument("--out", help="run directory")
    t.add_argument("--no-evaluate", action="store_true", help="skip the test-split evaluation after training")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. epochs=5 img_size=112 augment.enabled=false")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="Dice/Jaccard with bootstrap CIs; writes results JSON and predictions")
    e.add_argument("--run", required=True, help="a 'segment train' output directory")
    e.add_argument("--manifest", help="default: the manifest the run was trained on")
    e.add_argument("--split", help="default: the run's test split")
    e.add_argument("--out", help="results folder (default: RUN/results)")
    e.add_argument("--bootstrap", type=int, help="resamples (default: the run's config)")
    e.add_argument("--empty", choices=["one", "skip"], default="one",
                   help="image with no lesion in truth and prediction: score 1 (one) or leave out (skip)")
    e.add_argument("--no-predictions", action="store_true", help="do not write mask and overlay PNGs")
    e.set_defaults(func=_evaluate)

    r = sub.add_parser("predict", help="write mask PNGs (0/255) and overlays for images")
    r.add_argument("--run", required=True)
    r.add_argument("--images", nargs="+", required=True, help="image files or folders")
    r.add_argument("--out", required=True)
    r.add_argument("--no-overlays", action="store_true")
    r.set_defaults(func=_predict)


def _train(args: argparse.Namespace) -> int:
    from dermino.segment.config import SegmentConfig
    from dermino.segment.predict import evaluate_segmentation
    from dermino.segment.train import train_segmentation

    flags = {key: getattr(args, key) for key in ("manifest", "backbone", "weights", "head", "out")}
    cfg = load_config(SegmentConfig, args.config, args.overrides, flags=flags)
    run = train_segmentation(cfg)
    print(f"run: {run}")
    if not args.no_evaluate:
        result = evaluate_segmentation(run)
        _print(result)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dermino.segment.predict import evaluate_segmentation

    result = evaluate_segmentation(
        args.run, manifest=args.manifest, split=args.split, out_dir=args.out, n_bootstrap=args.bootstrap,
        empty=args.empty, write_predictions=not args.no_predictions,
    )
    _print(result)
    return 0


def _predict(args: argparse.Namespace) -> int:
    from dermino.segment.predict import predict_images

    written = predict_images(args.run, args.images, args.out, overlays=not args.no_overlays)
    print(f"{len(written)} mask(s) written to {Path(args.out)}")
    return 0


def _print(result) -> None:
    print(f"{result.backbone} / {result.dataset} / {result.task} ({result.extra['n_images']} images)")
    for name, m in result.metrics.items():
        ci = f" [{m.ci_low:.4f}, {m.ci_high:.4f}]" if m.ci_low is not None else ""
        print(f"  {name:22s} {m.value:.4f}{ci}")
    print(f"  whole-image baseline Dice {result.extra['whole_image_baseline']['dice']:.4f}")
