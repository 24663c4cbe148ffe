"""``dermino explain IMAGE``: attention overlay PNGs (rollout and last-block CLS per head)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("explain", help="attention maps of a classifier's backbone as overlay PNGs")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--classifier", required=True, help="classifier folder (its backbone and preprocessing)")
    p.add_argument("--out", default="explain", help="output folder (default ./explain)")
    p.add_argument("--method", choices=["rollout", "cls", "all"], default="all",
                   help="rollout, cls (mean of heads and each head), or all (default)")
    p.set_defaults(func=_explain)


def _explain(args: argparse.Namespace) -> int:
    from dermino.classifier.model import load_classifier
    from dermino.data.images import read_rgb
    from dermino.serve.explain import attention_maps, crop_box, overlay, select_map

    clf = load_classifier(args.classifier)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for path in map(Path, args.images):
        image = read_rgb(path)
        maps = attention_maps(clf.backbone, clf.transform(image).unsqueeze(0))
        box = crop_box(clf.transform, image.size)
        wanted: list[tuple[str, str, int | None]] = []
        if args.method in ("rollout", "all"):
            wanted.append(("rollout", "rollout", None))
        if args.method in ("cls", "all"):
            wanted.append(("cls", "cls_mean", None))
            wanted += [("cls", f"cls_head{h}", h) for h in range(maps["cls"].shape[1])]
        for method, tag, head in wanted:
            target = out / f"{path.stem}_{tag}.png"
            overlay(image, select_map(maps, method, head), box).save(target)
            print(target)
    return 0
