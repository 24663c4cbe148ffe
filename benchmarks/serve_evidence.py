"""Deployment evidence on real HAM10000 images: calibration (ECE), ONNX parity and latency.

Trains a classifier on a lesion-grouped subset of HAM10000 (``--data``: the folder with
``ham10000/``), builds the similar-case index from its train split, exports ONNX and times
onnxruntime against PyTorch. The backbone is a ViT-Tiny/14 at random initialisation unless
``--weights`` is given (no pretrained weights ship offline): ECE and latency are meaningful,
accuracy is not. Writes benchmarks/results/serve_evidence.json and the classifier/index under
``--out`` for serve_load.py and serve_screenshots.py. Resumable: embeddings are cached.

    python benchmarks/serve_evidence.py --data /path/to/data --out /tmp/serve_evidence
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from dermino.classifier.model import load_classifier
from dermino.classifier.train import ClassifierConfig, train_classifier
from dermino.data.adapters import ham10000
from dermino.data.images import read_rgb
from dermino.data.manifest import write_manifest
from dermino.data.splits import assign_splits
from dermino.serve.export import check_onnx, export_onnx, onnx_session
from dermino.serve.index_build import build_index

HERE = Path(__file__).resolve().parent


def subset_manifest(data: Path, out: Path, n_images: int, seed: int) -> Path:
    df = ham10000.build_manifest(data / "ham10000")
    rng = np.random.default_rng(seed)
    lesions = rng.permutation(np.array(sorted(df["lesion_id"].astype(str).unique()), dtype=object))
    counts = df.groupby("lesion_id").size()
    keep = set(lesions[: int(np.searchsorted(counts.loc[lesions].cumsum().to_numpy(), n_images)) + 1])
    sub = df[df["lesion_id"].isin(keep)].reset_index(drop=True)
    sub.attrs = dict(df.attrs)
    sub = assign_splits(sub, test_fraction=0.3, val_fraction=0.0, group_col="lesion_id", seed=seed)
    return write_manifest(sub, out / "ham_subset.csv", root=df.attrs.get("root"))


def timed(fn, repeats: int) -> dict[str, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
            "mean_ms": float(np.mean(times))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="folder holding ham10000/")
    ap.add_argument("--out", default="/tmp/serve_evidence")
    ap.add_argument("--images", type=int, default=3000, help="HAM10000 images used (whole lesions)")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--depth", type=int, default=12, help="ViT-Tiny blocks (6 halves the CPU time)")
    ap.add_argument("--weights", default="", help="backbone checkpoint (default: random init)")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reuse", action="store_true", help="reuse the classifier and index already in --out")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = subset_manifest(Path(args.data), out, args.images, seed=0)
    overrides = {"img_size": args.image_size, "layerscale_init": 1.0, "depth": args.depth}
    cfg = ClassifierConfig(manifest=str(manifest), out=str(out / "classifier"), backbone="dermino_vit_tiny_14",
                           weights=args.weights, backbone_overrides=overrides, image_size=args.image_size,
                           cache_dir=str(out / "cache"), n_resamples=1000)
    if args.reuse and (out / "classifier" / "classifier.json").is_file() and (out / "index" / "index.json").is_file():
        from dermino.serve.index import CaseIndex

        folder, train_s, index_s = out / "classifier", float("nan"), float("nan")
        clf, index = load_classifier(folder), CaseIndex.load(out / "index")
    else:
        t0 = time.perf_counter()
        torch.manual_seed(0)
        folder = train_classifier(cfg)
        train_s = time.perf_counter() - t0
        clf = load_classifier(folder)
        t0 = time.perf_counter()
        index = build_index(clf, manifest, out / "index", splits=["train", "val"], cache_dir=str(out / "cache"))
        index_s = time.perf_counter() - t0
    info = json.loads((folder / "classifier.json").read_text())

    onnx_path = export_onnx(clf, out / "classifier.onnx")
    images = [read_rgb(p) for p in sorted((Path(args.data) / "ham10000" / "images").glob("*.jpg"))[:8]]
    diffs = check_onnx(clf, onnx_path, images)
    sess = onnx_session(onnx_path, threads=args.threads)
    latency = {}
    for batch in (1, 8):
        x = clf.preprocess(images[:batch])
        with torch.inference_mode():
            latency[f"pytorch_b{batch}"] = timed(lambda x=x: clf(x), args.repeats)
        latency[f"onnxruntime_b{batch}"] = timed(lambda x=x: sess.run(["probs"], {"image": x.numpy()}),
                                                 args.repeats)
    result = {
        "images": info["training_data"]["n"], "classes": info["label_names"],
        "backbone": f"dermino_vit_tiny_14 depth {args.depth} @ {args.image_size}px, "
                    + (args.weights or "random init"),
        "calibration": info["calibration"], "metrics": info["metrics"],
        "onnx_max_abs_diff": diffs, "latency_ms": latency, "threads": args.threads,
        "train_seconds": train_s, "index_cases": len(index), "index_seconds": index_s,
        "classifier": str(folder), "index": str(out / "index"),
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "serve_evidence.json").write_text(json.dumps(result, indent=2))
    cal = info["calibration"]
    print(f"\nHAM10000 subset {info['training_data']['n']}; temperature {cal['temperature']:.3f}")
    print(f"test ECE before {cal['ece_before']:.4f} -> after {cal['ece_after']:.4f}  "
          f"(CI after [{info['metrics']['ece_after']['ci_low']:.4f}, {info['metrics']['ece_after']['ci_high']:.4f}])")
    print(f"macro AUROC {info['metrics']['auroc']['value']:.3f}  "
          f"[{info['metrics']['auroc']['ci_low']:.3f}, {info['metrics']['auroc']['ci_high']:.3f}]")
    print("onnx max |diff|: " + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    print(f"{'engine':<18}{'p50 ms':>10}{'p95 ms':>10}")
    for k, v in latency.items():
        print(f"{k:<18}{v['p50_ms']:>10.2f}{v['p95_ms']:>10.2f}")


if __name__ == "__main__":
    main()
