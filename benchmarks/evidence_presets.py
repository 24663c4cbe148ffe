"""Every evaluation preset on the published data: the CPU-pretrained dermino backbones against random
init and a library baseline, with the time per cell (issue 25, item 8).

Backbones: the teachers that ``benchmarks/evidence_knowledge.py`` pretrained (``--from``; SSL-only and
hybrid with the default head, ViT-Tiny/14 4 blocks, 40,000 images, pretraining seeds ``--seeds``),
the same architecture at random init, and ``timm:resnet18`` with random weights at its own published
preprocessing (no pretrained image weights can be downloaded here, so the library row measures the
wiring and the cost of a library model, not its published quality; with weights on disk, pass them
to ``dermino leaderboard`` instead). The dermino backbones declare their pretraining rows (HAM10000
train lesions, ISIC 2017 train + unlabelled test) as their corpus, so every table carries the
contamination column.

Datasets: HAM10000 (7 classes, test = 50 % of lesions), ISIC 2017 melanoma (official validation as
test) and PH2 (3 classes, never pretrained on). Presets, each into its own leaderboard folder under
``--out``: ``dermino-paper`` (kNN, converged linear probe, fairness by sex, age band and estimated
skin tone -- no image here has a Fitzpatrick label -- and per-group calibration / equalised odds),
``label-efficiency`` (1/10/30/50/100 % of the labels, 3 subset seeds), ``zero-shot`` (the knowledge
head) and ``retrieval`` (image-to-image R@k and mAP by diagnosis). Teacher features at ``--eval-size``
px, cached (the knowledge evidence's cache is reused when ``--cache`` points at it).

Resumable: the leaderboard keeps finished cells (fingerprinted), so a rerun computes only what is
missing. Prints one table and writes benchmarks/results/evidence_presets.json.

    python benchmarks/evidence_presets.py --data ../shared/data --from runs/evidence_knowledge
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import torch
from _common import (
    RESULTS,
    TINY_ARCH,
    add_data_argument,
    load_average,
    require_data,
    setup_logging,
    write_json,
)
from threadpoolctl import threadpool_limits

from dermino.config import check_config, from_dict
from dermino.data.manifest import read_manifest, write_manifest
from dermino.evaluate.config import BackboneSpec, DatasetSpec, EvalConfig
from dermino.evaluate.leaderboard import LeaderboardOptions, run_leaderboard
from dermino.evaluate.presets import PRESETS, preset_data
from dermino.report.leaderboard import write_leaderboard_report

PRETRAIN_SPLITS = ("train", "none")  # the rows evidence_knowledge.py pretrained on (data.splits)


def corpus_manifest(manifests: dict[str, Path], dest: Path) -> Path:
    """The pretraining rows of HAM10000 and ISIC 2017 as one manifest (the declared corpus)."""
    if dest.is_file():
        return dest
    parts = []
    for key in ("ham10000", "isic2017"):
        df = read_manifest(manifests[key])
        parts.append(df[df["split"].isin(PRETRAIN_SPLITS)])
    corpus = pd.concat(parts, ignore_index=True)
    corpus.attrs["root"] = parts[0].attrs.get("root")
    write_manifest(corpus, dest, root=corpus.attrs.get("root"))
    return dest


def backbones(source: Path, seeds: list[int], corpus: Path, library: str) -> list[BackboneSpec]:
    specs = [BackboneSpec(name="random-init", model="dermino_vit_tiny_14", overrides=dict(TINY_ARCH))]
    for arm in ("ssl-only", "hybrid-siglip"):
        for seed in seeds:
            weights = source / "pretrain" / f"{arm}@seed{seed}" / "export" / "teacher_backbone.pt"
            if not weights.is_file():
                raise SystemExit(f"{weights} is missing: run benchmarks/evidence_knowledge.py --seeds "
                                 f"{','.join(map(str, seeds))} --arms {arm} first")
            specs.append(BackboneSpec(name=f"{arm}@seed{seed}", model="dermino_vit_tiny_14", weights=str(weights),
                                      overrides=dict(TINY_ARCH), corpus=[str(corpus)]))
    if library:
        specs.append(BackboneSpec(name=f"{library.partition(':')[2] or library} (random weights)", model=library))
    return specs


def datasets(manifests: dict[str, Path]) -> list[DatasetSpec]:
    return [
        DatasetSpec(name="ham10000", manifest=str(manifests["ham10000"])),
        DatasetSpec(name="isic2017-melanoma", manifest=str(manifests["isic2017"]), positive="melanoma",
                    test_split="val", val_split=""),
        DatasetSpec(name="ph2", manifest=str(manifests["ph2"])),
    ]


def preset_config(preset: str, out: Path, specs: list[BackboneSpec], data: list[DatasetSpec],
                  args: argparse.Namespace) -> EvalConfig:
    over = {
        "name": f"evidence-{preset}", "out_dir": str(out / preset), "progress": False,
        "reference": "random-init", "bootstrap": args.bootstrap,
        "backbones": [asdict(b) for b in specs], "datasets": [asdict(d) for d in data],
        "embed": {"image_size": args.eval_size, "cache_dir": str(args.cache or out / "cache")},
        # no image here has a Fitzpatrick label: skin tone is estimated (ITA of non-lesion skin)
        "fairness": {"attributes": ["fitzpatrick", "skin_tone", "sex", "age"], "protocol": "linear"},
    }
    cfg = check_config(from_dict(EvalConfig, preset_data(preset, over), where=f"evidence {preset}"), preset)
    cfg.preset = preset
    return cfg


def _main_row(r: dict) -> bool:
    """The rows the summary table keeps: each protocol's headline numbers (the CSV has them all)."""
    if r["protocol"] == "label-efficiency":
        return r["metric"] == "aulc" or r["group"] in ("fraction=0.01", "fraction=1", "fraction=1.0")
    if r["group"]:
        return False
    if r["protocol"].startswith("calibration"):
        return r["metric"] == "ece"
    if r["protocol"] == "retrieval":
        return r["metric"] in ("map", "r@1")
    return r["metric"] in ("auroc", "f1") and not r["protocol"].startswith("fairness")


def summarise(board: dict, preset: str) -> list[dict]:
    """The headline numbers of each (backbone, dataset, protocol) with CIs, and the cell's time."""
    cells = {(c["backbone"], c["dataset"]): c for c in board["cells"]}
    contamination = {(r["backbone"], r["dataset"]): r["value"] for r in board["rows"]
                     if r["protocol"] == "contamination"}
    rows = []
    for r in board["rows"]:
        if r["protocol"] == "contamination" or not _main_row(r):
            continue
        key = (r["backbone"], r["dataset"])
        rows.append({"preset": preset, "dataset": r["dataset"], "backbone": r["backbone"],
                     "protocol": r["protocol"], "metric": r["metric"] + (f" {r['group']}" if r["group"] else ""),
                     "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"],
                     "cell_s": cells.get(key, {}).get("seconds"), "contamination": contamination.get(key)})
    for (bb, ds), c in cells.items():
        if c.get("status") != "done":
            rows.append({"preset": preset, "dataset": ds, "backbone": bb, "protocol": "FAILED",
                         "metric": c.get("error", ""), "value": None, "ci_low": None, "ci_high": None,
                         "cell_s": c.get("seconds"), "contamination": None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--from", dest="source", default="runs/evidence_knowledge",
                    help="the evidence_knowledge.py output folder (its manifests and pretrained teachers)")
    ap.add_argument("--out", default="runs/evidence_presets")
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--seeds", default="0", help="pretraining seeds of each dermino recipe to include")
    ap.add_argument("--library", default="timm:resnet18", help="a library baseline ('' for none)")
    ap.add_argument("--cache", default="", help="embedding cache (default OUT/cache)")
    ap.add_argument("--eval-size", type=int, default=56)
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2, help="torch and BLAS threads")
    args = ap.parse_args()
    require_data(ap, args)
    setup_logging()
    torch.set_num_threads(args.threads)
    threadpool_limits(limits=args.threads)  # numpy / scikit-learn BLAS too, not only torch
    source, out = Path(args.source), Path(args.out)
    manifests = {k: source / "manifests" / f"{k}.csv" for k in ("ham10000", "isic2017", "ph2")}
    missing = [str(p) for p in manifests.values() if not p.is_file()]
    if missing:
        raise SystemExit(f"missing {missing}: run benchmarks/evidence_knowledge.py first (it writes them)")
    out.mkdir(parents=True, exist_ok=True)
    corpus = corpus_manifest(manifests, out / "corpus_pretraining_rows.csv")
    specs = backbones(source, [int(s) for s in args.seeds.split(",") if s.strip()], corpus, args.library)
    data = datasets(manifests)
    rows, timings = [], {}
    for preset in [p for p in args.presets.split(",") if p]:
        t0 = time.perf_counter()
        folder = run_leaderboard(preset_config(preset, out, specs, data, args),
                                 LeaderboardOptions(reference="random-init"))
        write_leaderboard_report(folder, title=f"dermino evidence: preset {preset}")
        timings[preset] = round(time.perf_counter() - t0, 1)
        board = json.loads((folder / "leaderboard.json").read_text())
        rows += summarise(board, preset)
        print(f"{preset}: {timings[preset]:.0f} s this run ({folder})", flush=True)
    frame = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        print(frame.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    dest = write_json({"rows": rows, "preset_seconds_this_run": timings, "load_average": load_average(),
                       "threads": args.threads, "eval_size": args.eval_size, "seeds": args.seeds,
                       "library": args.library}, RESULTS / "evidence_presets.json")
    print(f"wrote {dest}")


if __name__ == "__main__":
    main()
