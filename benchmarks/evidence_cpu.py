"""CPU evidence run: hybrid pretraining vs the SSL-only ablation vs random init, on real data.

What it does (all on the published data folder, ``--data`` or ``$DERMINO_SHARED_DATA``, nothing downloaded):

1. manifests of HAM10000 (grouped 50/50 train/test by lesion + a validation carve-out),
   ISIC 2017 (official train/val; the unlabelled test images join pretraining) and PH2;
2. the disease vocabulary and prototypes (``dermino knowledge build``);
3. two ViT-Tiny/14 pretraining runs from scratch (configs/pretrain/tiny_cpu.yaml) on the HAM10000
   train split + all ISIC 2017 images for the same image budget: the full hybrid objective, and
   the same without the knowledge loss;
4. evaluation of random init / SSL-only / hybrid: kNN (k=5, cosine) and linear probe, macro
   AUROC and F1 with 1,000-resample bootstrap CIs, paired tests, fairness by sex and estimated
   skin tone, on HAM10000 test lesions (7 classes) and ISIC 2017 validation (melanoma);
5. frozen-backbone segmentation on PH2 and HAM10000: linear vs UperNet, random vs hybrid.

Prints the tables and writes ``benchmarks/results/evidence_cpu.json``. Takes about 20 minutes on
2 CPU cores with the defaults; ``--budget`` sets images per pretraining run.

    python benchmarks/evidence_cpu.py --data PATH/TO/DATA --budget 10000 --out runs/evidence
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd
from _common import (
    RESULTS,
    TINY_ARCH,
    add_data_argument,
    evaluation_config,
    published_manifests,
    require_data,
    setup_logging,
    tiny_cpu_config,
    write_json,
)

from dermino.cli import main as cli
from dermino.evaluate.runner import run_evaluation
from dermino.pretrain import pretrain
from dermino.results import read_results
from dermino.segment import SegmentConfig, evaluate_segmentation, train_segmentation


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--out", default="runs/evidence")
    ap.add_argument("--budget", type=int, default=10000, help="images per pretraining run")
    ap.add_argument("--eval-size", type=int, default=98)
    ap.add_argument("--seg-epochs", type=int, default=10)
    ap.add_argument("--seg-max-train", type=int, default=1000)
    args = ap.parse_args()
    data = require_data(ap, args)
    setup_logging()
    out = Path(args.out)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    manifests = published_manifests(data, out)
    timings["data"] = time.perf_counter() - t

    t = time.perf_counter()
    code = cli(["knowledge", "build", *map(str, manifests.values()), "--out", str(out / "knowledge")])
    assert code == 0, "knowledge build failed"
    timings["knowledge"] = time.perf_counter() - t

    weights: dict[str, str | None] = {"random-init": None}
    pretrain_stats = {}
    for run, knowledge in (("hybrid", True), ("ssl-only", False)):
        cfg = tiny_cpu_config([
            f"data.manifests=[{manifests['ham10000']},{manifests['isic2017']}]",
            f"losses.knowledge.enabled={str(knowledge).lower()}",
            f"losses.knowledge.prototypes={out / 'knowledge' / 'prototypes.safetensors'}",
            f"losses.knowledge.vocabulary={out / 'knowledge' / 'vocabulary.csv'}",
            f"schedule.budget_images={args.budget}",
            f"run.out_dir={out / 'pretrain' / run}",
            "run.checkpoint_every=200",
            "run.progress=false",
        ])
        run_dir = Path(cfg.run.out_dir)
        if (run_dir / "export" / "teacher_backbone.pt").is_file() and (run_dir / "timing.json").is_file():
            seconds = json.loads((run_dir / "timing.json").read_text())["seconds"]  # rerun: keep the run
        else:
            t = time.perf_counter()
            run_dir = Path(pretrain(cfg))
            seconds = time.perf_counter() - t
            (run_dir / "timing.json").write_text(json.dumps({"seconds": seconds}))
        timings[f"pretrain-{run}"] = seconds
        metrics = pd.read_csv(run_dir / "metrics.csv")
        pretrain_stats[run] = {
            "seconds": seconds, "images_per_s": args.budget / seconds,
            "loss_first": float(metrics["loss"].iloc[0]), "loss_last": float(metrics["loss"].iloc[-1]),
        }
        weights[run] = str(run_dir / "export" / "teacher_backbone.pt")

    ecfg = evaluation_config("evidence", out, weights, manifests, "random-init", ["knn", "linear", "fairness"],
                             args.eval_size)
    ecfg.fairness.attributes = ["sex", "age", "skin_tone"]
    t = time.perf_counter()
    run_evaluation(ecfg)
    timings["evaluate"] = time.perf_counter() - t

    t = time.perf_counter()
    for dataset in ("ph2", "ham10000"):
        for head in ("linear", "upernet"):
            for label in ("random-init", "hybrid"):
                scfg = SegmentConfig(
                    manifest=str(manifests[dataset]), name=label, backbone="dermino_vit_tiny_14",
                    weights=weights[label], backbone_overrides=dict(TINY_ARCH), head=head,
                    out=str(out / "segment" / f"{dataset}-{head}-{label}"), img_size=[args.eval_size],
                    epochs=args.seg_epochs, max_train=args.seg_max_train, max_val=200, device="cpu",
                    mask_threshold=0.5 if dataset == "ham10000" else None, progress=False,
                )
                scfg.augment.enabled = False
                run = train_segmentation(scfg)
                evaluate_segmentation(run, out_dir=out / "eval" / "results", write_predictions=False)
    timings["segment"] = time.perf_counter() - t

    rows = []
    for r in read_results(out / "eval" / "results"):
        for name, m in r.metrics.items():
            if name in {"auroc", "f1", "dice", "jaccard", "sex_gap_auroc", "skin_tone_gap_auroc"}:
                rows.append({"dataset": r.dataset, "task": r.task, "backbone": r.backbone, "metric": name,
                             "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n})
    table = pd.DataFrame(rows).sort_values(["dataset", "task", "metric", "backbone"])
    print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(json.dumps({"pretrain": pretrain_stats, "timings_s": timings}, indent=2))
    write_json({"pretrain": pretrain_stats, "timings_s": timings, "results": rows, "budget_images": args.budget},
               RESULTS / "evidence_cpu.json")


if __name__ == "__main__":
    main()
