"""``dermino export onnx``: backbone + head to ONNX, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a classifier (ONNX)")
    sub = p.add_subparsers(dest="export_command", metavar="FORMAT")
    sub.required = True
    o = sub.add_parser("onnx", help="backbone + head with a dynamic batch axis; parity checked with onnxruntime")
    o.add_argument("--classifier", required=True)
    o.add_argument("--out", required=True, help="the .onnx file (a .json with labels/preprocessing is written beside)")
    o.add_argument("--opset", type=int, default=18)
    o.add_argument("--check-images", nargs="*", default=None,
                   help="images for the parity check (default: 4 bundled HAM10000 sample images)")
    o.add_argument("--atol", type=float, default=1e-4, help="fail when probabilities differ by more (fp32)")
    o.set_defaults(func=_onnx)


def _onnx(args: argparse.Namespace) -> int:
    from dermino.classifier.model import load_classifier
    from dermino.data.images import read_rgb
    from dermino.data.sample import sample_root
    from dermino.serve.export import check_onnx, export_onnx

    clf = load_classifier(args.classifier)
    path = export_onnx(clf, args.out, opset=args.opset)
    paths = args.check_images or sorted((sample_root() / "ham10000" / "images").glob("*.jpg"))[:4]
    diffs = check_onnx(clf, path, [read_rgb(p) for p in paths])
    print(f"onnx: {path} ({Path(path).stat().st_size / 1e6:.1f} MB), labels and preprocessing in "
          f"{Path(path).with_suffix('.json')}")
    for name, d in diffs.items():
        print(f"  max |onnxruntime - pytorch| {name:10s} {d:.2e}  ({len(paths)} images)")
    if diffs["probs"] > args.atol:
        print(f"onnx: parity check FAILED: probabilities differ by {diffs['probs']:.2e} > {args.atol:g}")
        return 1
    return 0
