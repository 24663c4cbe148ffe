"""CPU evidence: continued pretraining from DINOv2-format weights, with and without the head warm-up.

What it does (HAM10000 from a data folder, nothing downloaded):

1. a HAM10000 manifest split by lesion (50 % test, 10 % val); the kNN monitor uses a fixed
   subsample of the train lesions as memory bank and of the val lesions as queries;
2. the *source*: a ViT-Tiny/14 (configs/pretrain/tiny_cpu.yaml, lighter heads and crops) pretrained
   from scratch on the train lesions at ``--source-size`` px, its teacher saved in the official
   DINOv2 hub format (``dinov2_format.pth``: hub key names, ``pos_embed`` at its own grid);
3. two continued runs from that file at ``--size`` px (the position embeddings are interpolated),
   new random heads, the same budget and seed: ``warmup`` (the default head warm-up, a share of
   the budget with the backbone frozen) and ``no-warmup`` (``schedule.head_warmup_images=0``);
   the kNN monitor runs at step 0 and every ``--monitor-every`` steps; the guard only reports
   (``run.collapse_patience=0``) so that both runs finish;
4. the final comparison on the held-out test lesions: kNN (k=5) macro AUROC of the source and of
   both final teachers, 1,000-resample bootstrap CIs, paired bootstrap differences.

Prints the monitor curve per step and the comparison; writes
``benchmarks/results/evidence_continued.json``. Resumable: a finished stage (source run, either
continued run) is reused, a killed pretraining run resumes from its checkpoint. Wall time is
printed per stage. The defaults suit a free machine; on a shared 2-core one (load ~25) the
reduced run in docs/continued_pretraining.md took 29 minutes.

    nice -n 10 python benchmarks/evidence_continued.py --data PATH/TO/DATA --out runs/evidence_continued
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import RESULTS, add_data_argument, require_data, setup_logging, tiny_cpu_config, write_json

from dermino.data.adapters import build
from dermino.data.manifest import read_manifest, write_manifest
from dermino.data.splits import assign_splits
from dermino.evaluate.knn import KNNConfig, knn_classify
from dermino.evaluate.metrics import macro_auroc
from dermino.evaluate.stats import bootstrap_ci, paired_bootstrap
from dermino.models import create, export_dinov2, load_exported
from dermino.pretrain import pretrain
from dermino.pretrain.checkpoint import latest_checkpoint
from dermino.pretrain.monitor import embed, labelled
from dermino.pretrain.warmup import head_warmup_steps

# lighter than tiny_cpu.yaml's heads and crops so that three runs fit a shared 2-core machine
COMMON = [
    "model.heads.out_dim=1024", "model.heads.hidden_dim=256", "model.heads.bottleneck_dim=64",
    "crops.n_local=2", "crops.local_size=28", "data.splits=[train]", "run.progress=false",
    "run.log_every=5", "run.threads=2",
]


def subsample(df: pd.DataFrame, split: str, n: int, seed: int) -> pd.DataFrame:
    rows = df[df["split"] == split]
    return rows.sample(n=min(n, len(rows)), random_state=seed) if n else rows


def run_pretrain(overrides: list[str], out: Path) -> tuple[Path, float]:
    """A pretraining run, reused when finished, resumed when killed; (run dir, seconds)."""
    timing = out / "timing.json"
    if (out / "export" / "teacher").is_dir() and timing.is_file():
        return out, json.loads(timing.read_text())["seconds"]
    cfg = tiny_cpu_config([*COMMON, *overrides, f"run.out_dir={out}"])
    resume = latest_checkpoint(out / "checkpoints") is not None
    t = time.perf_counter()
    pretrain(cfg, resume=resume)
    seconds = time.perf_counter() - t + (json.loads(timing.read_text())["seconds"] if resume and timing.is_file() else 0)
    timing.write_text(json.dumps({"seconds": seconds}))
    return out, seconds


def knn_test(backbone: torch.nn.Module, bank: pd.DataFrame, test: pd.DataFrame, size: int):
    """(y_true, probs) of k=5 weighted-vote kNN on the test rows."""
    bank, bank_y = labelled(bank)
    test, test_y = labelled(test)
    classes = sorted(set(bank_y) | set(test_y))
    index = {c: i for i, c in enumerate(classes)}
    device = torch.device("cpu")
    out = knn_classify(embed(backbone, bank, size, device).numpy(), np.array([index[v] for v in bank_y]),
                       embed(backbone, test, size, device).numpy(), len(classes), KNNConfig(k=5))
    return np.array([index[v] for v in test_y]), out.probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--out", default="runs/evidence_continued")
    ap.add_argument("--source-images", type=int, default=2400, help="pretraining budget of the source model")
    ap.add_argument("--source-size", type=int, default=84, help="source global crop (px): its pos_embed grid")
    ap.add_argument("--images", type=int, default=1200, help="budget of each continued run")
    ap.add_argument("--size", type=int, default=70, help="continued runs' global crop (px)")
    ap.add_argument("--warmup-images", type=int, default=None,
                    help="head warm-up of the warm-up run (default: the trainer's default for init_weights)")
    ap.add_argument("--epoch-size", type=int, default=480, help="images per schedule 'epoch' (lr warm-up = 1)")
    ap.add_argument("--monitor-every", type=int, default=15, help="steps (batch 16)")
    ap.add_argument("--monitor-bank", type=int, default=600)
    ap.add_argument("--monitor-queries", type=int, default=300)
    ap.add_argument("--test-bank", type=int, default=1500)
    ap.add_argument("--test-queries", type=int, default=1500)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args()
    data = require_data(ap, args)
    setup_logging()
    out = Path(args.out)
    timings: dict[str, float] = {}

    t = time.perf_counter()
    manifest = out / "manifests" / "ham10000.csv"
    if not manifest.is_file():
        df = assign_splits(build("ham10000", data / "ham10000"), test_fraction=0.5,
                           val_fraction=0.1, group_col="lesion_id", seed=0)
        write_manifest(df, manifest)
    ham = read_manifest(manifest)
    monitor = pd.concat([subsample(ham, "train", args.monitor_bank, 0), subsample(ham, "val", args.monitor_queries, 0)])
    monitor_path = write_manifest(monitor, out / "manifests" / "monitor.csv")
    timings["data"] = time.perf_counter() - t

    # ---- the source model, saved in the DINOv2 hub format
    src_dir, timings["pretrain-source"] = run_pretrain([
        f"data.manifests=[{manifest}]", f"schedule.budget_images={args.source_images}",
        f"crops.global_size={args.source_size}", f"data.epoch_size={args.epoch_size}", "run.checkpoint_every=50",
    ], out / "source")
    dinov2_file = out / "source" / "dinov2_format.pth"
    source = load_exported(src_dir / "export" / "teacher").eval()
    export_dinov2(source, dinov2_file)
    grid = torch.load(dinov2_file, weights_only=True)["pos_embed"].shape[1] - 1

    # ---- continued runs from the file, with and without the head warm-up
    runs: dict[str, dict] = {}
    for name, warm in (("warmup", args.warmup_images), ("no-warmup", 0)):
        overrides = [
            f"data.manifests=[{manifest}]", f"model.init_weights={dinov2_file}",
            f"schedule.budget_images={args.images}", f"crops.global_size={args.size}",
            f"data.epoch_size={args.epoch_size}", f"data.monitor_train={monitor_path}",
            f"data.monitor_val={monitor_path}", f"data.monitor_size={args.size}",
            f"run.monitor_every={args.monitor_every}", "run.checkpoint_every=15", "run.collapse_patience=0",
        ]
        if warm is not None:
            overrides.append(f"schedule.head_warmup_images={warm}")
        run_dir, timings[f"pretrain-{name}"] = run_pretrain(overrides, out / name)
        metrics = pd.read_csv(run_dir / "metrics.csv")
        runs[name] = {
            "dir": run_dir,
            "monitor": pd.read_csv(run_dir / "monitor.csv"),
            "warmup_steps": head_warmup_steps(warm, str(dinov2_file), 16, math.ceil(args.images / 16), args.epoch_size),
            "metrics": metrics,
        }

    # ---- the monitor curves side by side
    curve = pd.DataFrame({"step": runs["warmup"]["monitor"]["step"]})
    for name, r in runs.items():
        m = r["monitor"].set_index("step")
        curve[f"{name} auroc"] = curve["step"].map(m["knn_macro_auroc"])
        curve[f"{name} change"] = curve["step"].map(m["knn_macro_auroc_change"])
        curve[f"{name} acc"] = curve["step"].map(m["knn_accuracy"])
    print(f"\nkNN monitor (held-out val lesions, {args.monitor_queries} queries, bank {args.monitor_bank}); "
          f"head warm-up = {runs['warmup']['warmup_steps']} steps")
    print(curve.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    teacher_stats = {
        name: r["metrics"][["step", "teacher_entropy", "prototypes_used", "loss"]].iloc[::4].to_dict("records")
        for name, r in runs.items()
    }

    # ---- final comparison on the test lesions, with CIs
    t = time.perf_counter()
    bank = subsample(ham, "train", args.test_bank, 1)
    test = subsample(ham, "test", args.test_queries, 1)
    models = {
        "source": create("dermino_vit_tiny_14", weights=str(dinov2_file), depth=4, img_size=args.size).eval(),
        **{name: load_exported(r["dir"] / "export" / "teacher").eval() for name, r in runs.items()},
    }
    preds = {name: knn_test(m, bank, test, args.size) for name, m in models.items()}
    y = preds["source"][0]
    rows = []
    for name, (_, probs) in preds.items():
        m = bootstrap_ci(macro_auroc, y, probs, n_resamples=args.bootstrap)
        rows.append({"model": name, "macro_auroc": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n})
    pairs = []
    for a, b in (("warmup", "no-warmup"), ("warmup", "source"), ("no-warmup", "source")):
        c = paired_bootstrap(macro_auroc, y, preds[a][1], preds[b][1], n_resamples=args.bootstrap)
        pairs.append({"a": a, "b": b, "diff": c.diff.value, "ci_low": c.diff.ci_low, "ci_high": c.diff.ci_high,
                      "p": c.p_value})
    timings["final-eval"] = time.perf_counter() - t
    print(f"\nkNN (k=5) macro AUROC, {len(y)} held-out test images, bank {args.test_bank} train images, "
          f"{args.size} px")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(pd.DataFrame(pairs).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(json.dumps(timings, indent=1))

    dest = write_json({
        "args": vars(args), "source_grid": grid, "warmup_steps": runs["warmup"]["warmup_steps"],
        "monitor": curve.to_dict("records"), "teacher_stats": teacher_stats, "final": rows, "paired": pairs,
        "timings_s": timings,
    }, RESULTS / "evidence_continued.json")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
