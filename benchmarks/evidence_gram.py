"""CPU evidence: does continued pretraining lose dense quality, and do Gram anchoring and a
high-resolution stage keep it?

On the published data folder (``--data`` or ``$DERMINO_SHARED_DATA``), nothing downloaded:

1. manifests of HAM10000 (split by lesion: 50 % test, 10 % val), ISIC 2017 and PH2
   (``_common.published_manifests``);
2. the *source*: ``--source`` (a DINOv2-format ViT-Tiny/14 file), or else a ViT-Tiny/14
   (configs/pretrain/tiny_cpu.yaml, lighter heads, knowledge loss off) pretrained from scratch on
   the HAM10000 train lesions + ISIC 2017 train and unlabelled test images, saved once as
   ``<out>/source/dinov2_format.pth`` and reused;
3. three continued runs from it, the same budget and seed: ``no-gram``; ``gram`` (Gram anchoring
   to the source, ``losses.gram.teacher=initial``); ``gram-hires`` (the same plus a last stage at
   larger crops, ``schedule.stages``). The monitor runs at step 0 and every ``--monitor-every``
   steps: kNN macro AUROC (HAM10000 val lesions against a bank of train lesions), RankMe, the
   Gram distance to the start and the dense probe's lesion Dice on PH2 (``data.monitor_masks``);
   the guard only reports. Every monitor step keeps its checkpoint, and the dense probe is also
   scored from it on the HAM10000 lesion masks (ISIC 2018 Task 1 masks of the HAM10000 images,
   thresholded at 0.5: the published ISIC 2017 folder has no masks), and again on PH2 (a check:
   it must equal the in-run number);
4. the final comparison on held-out images, with 1,000-resample bootstrap CIs and paired bootstrap
   differences between the arms and against the source: kNN (k=5) macro AUROC on HAM10000 test
   lesions, dense-probe Dice on PH2 test and on HAM10000 test masks.

Resumable: the source, each finished run and each scored checkpoint are reused; a killed run
resumes from its checkpoint. Writes benchmarks/results/evidence_gram.json (``--json``).

    nice -n 19 python benchmarks/evidence_gram.py --data ../shared/data --out runs/evidence_gram
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _common import (
    RESULTS,
    TINY_ARCH,
    add_data_argument,
    load_average,
    published_manifests,
    require_data,
    setup_logging,
    tiny_cpu_config,
    write_json,
)

from dermino.data.manifest import read_manifest, write_manifest
from dermino.data.masks import mask_pairs, subset_pairs
from dermino.evaluate import segmentation as seg_metrics
from dermino.evaluate.dense import fit_dense_probe, probe_counts
from dermino.evaluate.knn import KNNConfig, knn_classify
from dermino.evaluate.metrics import macro_auroc
from dermino.evaluate.stats import bootstrap_ci, paired_bootstrap
from dermino.models import create, export_dinov2, load_exported
from dermino.pretrain import pretrain
from dermino.pretrain.checkpoint import list_checkpoints, load_checkpoint
from dermino.pretrain.config import StageConfig
from dermino.pretrain.monitor import embed, labelled

ARMS = ("no-gram", "gram", "gram-hires")
# --arch: the network (registry name, architecture overrides); tiny = tiny_cpu.yaml's ViT-Tiny/14
ARCHES = {"tiny": ("dermino_vit_tiny_14", TINY_ARCH), "small": ("dermino_vit_small_14", {"layerscale_init": 0.1})}
HAM_MASK_THRESHOLD = 0.5  # the 200x150 HAM10000 masks have anti-aliased edges


def common(args: argparse.Namespace) -> list[str]:
    """Lighter than tiny_cpu.yaml so that four runs fit a shared CPU; SSL losses only."""
    arch, over = ARCHES[args.arch]
    model = [f"model.arch={arch}", f"model.depth={over.get('depth', 'null')}"]
    device = [f"run.device={args.device}", f"run.precision={args.precision}", f"data.num_workers={args.workers}"]
    return [*model, *device, f"schedule.batch_size={args.batch_size}", "model.heads.out_dim=1024", "model.heads.hidden_dim=256", "model.heads.bottleneck_dim=64",
            "crops.n_local=2", f"crops.local_size={args.local_size}", "losses.knowledge.enabled=false",
            "run.progress=false", "run.log_every=5", f"run.threads={args.threads}"]


def run_pretrain(cfg, out: Path) -> float:
    """Run (or resume, or reuse) a pretraining run; its wall seconds over all sessions."""
    timing = out / "timing.json"
    if (out / "export" / "teacher").is_dir() and timing.is_file():
        return json.loads(timing.read_text())["seconds"]
    before = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
    t = time.perf_counter()
    pretrain(cfg, resume=bool(list_checkpoints(out / "checkpoints")))
    seconds = before + time.perf_counter() - t
    timing.write_text(json.dumps({"seconds": seconds}))
    return seconds


def source_file(args: argparse.Namespace, m: dict[str, Path], out: Path) -> tuple[Path, float]:
    if args.source:
        return Path(args.source), 0.0
    dest = out / "source" / "dinov2_format.pth"
    cfg = tiny_cpu_config([*common(args), f"data.manifests=[{m['ham10000']},{m['isic2017']}]",
                           "data.splits=[train,none]", f"schedule.budget_images={args.source_images}",
                           f"crops.global_size={args.size}", f"data.epoch_size={args.epoch_size}",
                           f"run.out_dir={out / 'source'}", "run.checkpoint_every=50"])
    seconds = run_pretrain(cfg, out / "source")
    if not dest.is_file():
        export_dinov2(load_exported(out / "source" / "export" / "teacher").eval(), dest)
    return dest, seconds


def arm_config(name: str, args: argparse.Namespace, m: dict[str, Path], monitor: Path, source: Path, out: Path):
    cfg = tiny_cpu_config([
        *common(args), f"data.manifests=[{m['ham10000']},{m['isic2017']}]", "data.splits=[train,none]",
        f"model.init_weights={source}", f"schedule.budget_images={args.images}", f"crops.global_size={args.size}",
        f"data.epoch_size={args.epoch_size}", f"data.monitor_train={monitor}", f"data.monitor_val={monitor}",
        f"data.monitor_size={args.size}", f"data.monitor_masks={m['ph2']}", f"data.monitor_masks_max={args.mask_images}",
        f"run.monitor_every={args.monitor_every}", f"run.checkpoint_every={args.monitor_every}",
        "run.keep_checkpoints=100000", "run.collapse_patience=0", f"run.out_dir={out / name}",
    ])
    if name != "no-gram":
        cfg.losses.gram.enabled, cfg.losses.gram.teacher = True, "initial"
        cfg.losses.gram.weight = args.gram_weight
    if name == "gram-hires":
        cfg.schedule.stages = [StageConfig(start=1 - args.hires_share, global_size=args.hires_size,
                                           local_size=args.local_size)]
    return cfg


def mask_sets(m: dict[str, Path], n: int) -> dict[str, tuple[list, list]]:
    """(fit, score) pairs per masked dataset: train rows to fit the probe, test rows to score it."""
    ph2, ham = read_manifest(m["ph2"]), read_manifest(m["ham10000"])
    return {
        "ph2": (subset_pairs(mask_pairs(ph2, "train"), n, 0), subset_pairs(mask_pairs(ph2, "test"), n, 0)),
        "ham10000_masks": (subset_pairs(mask_pairs(ham, "train", HAM_MASK_THRESHOLD), n, 0),
                           subset_pairs(mask_pairs(ham, "test", HAM_MASK_THRESHOLD), n, 0)),
    }


def per_image_dice(backbone: torch.nn.Module, fit: list, score: list, size: int, device: torch.device) -> np.ndarray:
    probe = fit_dense_probe(backbone, fit, (size, size), device=device)
    return seg_metrics.per_image(probe_counts(backbone, probe, score, (size, size), device=device), "dice")


def backbone_from(args: argparse.Namespace, weights: Path | None = None, state: dict | None = None) -> torch.nn.Module:
    """The --arch network from a DINOv2-format file or a state dict, in eval mode on --device."""
    arch, over = ARCHES[args.arch]
    backbone = create(arch, weights=str(weights) if weights else None, img_size=args.size, **over)
    if state is not None:
        backbone.load_state_dict(state)
    return backbone.to(args.device).eval()


def teacher_at(path: Path, args: argparse.Namespace) -> torch.nn.Module:
    """The teacher backbone of a pretraining checkpoint."""
    state = load_checkpoint(path)["model"]
    prefix = "teacher.backbone."
    return backbone_from(args, state={k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})


def dense_curve(run_dir: Path, source: Path, sets: dict, args: argparse.Namespace) -> pd.DataFrame:
    """Dense-probe Dice per kept checkpoint (step 0: the source), cached in dense.json."""
    cache_path = run_dir / "dense.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    models = {0: None, **{int(p.stem.split("_")[1]): p for p in list_checkpoints(run_dir / "checkpoints")}}
    for step, path in models.items():
        if str(step) in cache:
            continue
        backbone = backbone_from(args, weights=source) if path is None else teacher_at(path, args)
        cache[str(step)] = {name: float(per_image_dice(backbone, fit, score, args.size, args.device).mean())
                            for name, (fit, score) in sets.items()}
        cache_path.write_text(json.dumps(cache, indent=1))
    return pd.DataFrame([{"step": int(s), **{f"dice_{k}": v for k, v in d.items()}} for s, d in cache.items()])


def knn_test(backbone: torch.nn.Module, bank: pd.DataFrame, test: pd.DataFrame, size: int, device: torch.device):
    bank, bank_y = labelled(bank)
    test, test_y = labelled(test)
    classes = sorted(set(bank_y) | set(test_y))
    index = {c: i for i, c in enumerate(classes)}
    out = knn_classify(embed(backbone, bank, size, device).numpy(), np.array([index[v] for v in bank_y]),
                       embed(backbone, test, size, device).numpy(), len(classes), KNNConfig(k=5))
    return np.array([index[v] for v in test_y]), out.probs


def mean_score(_: np.ndarray, scores: np.ndarray) -> float:
    return float(np.mean(scores))


def subsample(df: pd.DataFrame, split: str, n: int, seed: int) -> pd.DataFrame:
    rows = df[df["split"] == split]
    out = rows.sample(n=min(n, len(rows)), random_state=seed) if n else rows
    out.attrs = dict(df.attrs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--out", default="runs/evidence_gram")
    ap.add_argument("--json", default=str(RESULTS / "evidence_gram.json"))
    ap.add_argument("--source", default="", help="DINOv2-format ViT-Tiny/14 file (default: pretrain one, cached)")
    ap.add_argument("--source-images", type=int, default=4800, help="from-scratch budget of the source")
    ap.add_argument("--images", type=int, default=4800, help="budget of each continued run")
    ap.add_argument("--size", type=int, default=56, help="global crop (px); also the monitor and evaluation size")
    ap.add_argument("--local-size", type=int, default=28)
    ap.add_argument("--hires-size", type=int, default=84, help="global crop of gram-hires's last stage")
    ap.add_argument("--hires-share", type=float, default=0.25, help="share of the steps at --hires-size")
    ap.add_argument("--gram-weight", type=float, default=2.0)
    ap.add_argument("--epoch-size", type=int, default=960, help="images per schedule 'epoch'")
    ap.add_argument("--monitor-every", type=int, default=25, help="steps")
    ap.add_argument("--monitor-bank", type=int, default=600)
    ap.add_argument("--monitor-queries", type=int, default=300)
    ap.add_argument("--mask-images", type=int, default=32, help="images per dense-probe fit and score set")
    ap.add_argument("--test-bank", type=int, default=1500)
    ap.add_argument("--test-queries", type=int, default=1500)
    ap.add_argument("--final-mask-images", type=int, default=100, help="test images per masked set, final")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--arch", choices=sorted(ARCHES), default="tiny", help="tiny: ViT-Tiny/14 (4 blocks); small: ViT-S/14")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--workers", type=int, default=0, help="data loader workers")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    args.device = str(args.device)
    data = require_data(ap, args)
    setup_logging()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    timings: dict[str, float] = {}
    m = published_manifests(data, out)
    ham = read_manifest(m["ham10000"])
    monitor = pd.concat([subsample(ham, "train", args.monitor_bank, 0), subsample(ham, "val", args.monitor_queries, 0)])
    monitor_path = write_manifest(monitor, out / "manifests" / "monitor.csv")

    source, timings["pretrain-source"] = source_file(args, m, out)
    sets = mask_sets(m, args.mask_images)
    arms = [a for a in args.arms.split(",") if a]
    curves, steps_per_s = {}, {}
    for name in arms:
        cfg = arm_config(name, args, m, monitor_path, source, out)
        timings[f"pretrain-{name}"] = run_pretrain(cfg, out / name)
        mon = pd.read_csv(out / name / "monitor.csv")
        t = time.perf_counter()
        dense = dense_curve(out / name, source, sets, args)
        timings[f"dense-{name}"] = time.perf_counter() - t
        curve = mon[["step", "knn_macro_auroc", "rankme", "gram_distance", "dense_dice"]].merge(dense, on="step",
                                                                                              how="left")
        curves[name] = curve
        metrics = pd.read_csv(out / name / "metrics.csv")
        steps_per_s[name] = float(metrics["images_per_s"].tail(20).median() / cfg.schedule.batch_size)
        print(f"\n{name}: per monitor step (dense_dice = in-run PH2 probe; dice_* = from the checkpoint)")
        print(curve.to_string(index=False, float_format=lambda v: f"{v:.4f}"))

    # ---- final comparison on held-out images, with CIs
    t = time.perf_counter()
    models = {"source": backbone_from(args, weights=source),
              **{a: load_exported(out / a / "export" / "teacher").to(args.device).eval() for a in arms}}
    bank, test = subsample(ham, "train", args.test_bank, 1), subsample(ham, "test", args.test_queries, 1)
    knn = {n: knn_test(b, bank, test, args.size, args.device) for n, b in models.items()}
    final_sets = mask_sets(m, args.final_mask_images)
    dice = {d: {n: per_image_dice(b, fit, score, args.size, args.device) for n, b in models.items()}
            for d, (fit, score) in final_sets.items()}
    y = knn["source"][0]
    rows = []
    for n in models:
        a = bootstrap_ci(macro_auroc, y, knn[n][1], n_resamples=args.bootstrap)
        row = {"model": n, "knn_auroc": a.value, "knn_lo": a.ci_low, "knn_hi": a.ci_high}
        for d, per in dice.items():
            c = bootstrap_ci(mean_score, np.zeros(len(per[n])), per[n], n_resamples=args.bootstrap)
            row |= {f"dice_{d}": c.value, f"dice_{d}_lo": c.ci_low, f"dice_{d}_hi": c.ci_high}
        rows.append(row)
    pairs = []
    names = list(models)
    for i, a in enumerate(names):
        for b in names[:i]:
            c = paired_bootstrap(macro_auroc, y, knn[a][1], knn[b][1], n_resamples=args.bootstrap)
            pairs.append({"a": a, "b": b, "metric": "knn_auroc_ham10000", "diff": c.diff.value,
                          "ci_low": c.diff.ci_low, "ci_high": c.diff.ci_high, "p": c.p_value})
            for d, per in dice.items():
                c = paired_bootstrap(mean_score, np.zeros(len(per[a])), per[a], per[b], n_resamples=args.bootstrap)
                pairs.append({"a": a, "b": b, "metric": f"dice_{d}", "diff": c.diff.value,
                              "ci_low": c.diff.ci_low, "ci_high": c.diff.ci_high, "p": c.p_value})
    timings["final-eval"] = time.perf_counter() - t
    print(f"\nfinal, {args.size} px: kNN on {len(y)} HAM10000 test images (bank {len(bank)}), dense probe fitted on "
          f"train masks and scored on {', '.join(f'{len(s)} {d}' for d, (_, s) in final_sets.items())} test masks")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(pd.DataFrame(pairs).to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"training steps/s (last 20 logged steps): {json.dumps(steps_per_s)}; load {load_average()}")
    print(json.dumps(timings, indent=1))
    dest = write_json({"args": vars(args), "curves": {k: v.to_dict("records") for k, v in curves.items()},
                       "final": rows, "paired": pairs, "steps_per_s": steps_per_s, "timings_s": timings,
                       "load": load_average()}, Path(args.json))
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
