"""The leaderboard: backbones x datasets x protocols, resumable, one tidy table.

Why cells: a leaderboard of ten backbones on seven datasets takes hours, and a kill -9 (a
pre-empted GPU, an OOM) must not cost the finished part. Each (backbone, dataset) cell runs
every protocol of the preset into its own folder ``cells/<backbone>__<dataset>/`` and then
writes ``status.json`` atomically; a cell with ``status: done`` is not recomputed while what it
was computed from is unchanged (its fingerprint: the settings, the weights' and the manifest's
content), a cell without one (killed mid-way), ``failed``, or whose backbone was retrained under
the same name, is run again. A backbone that fails (bad weights,
an exception in its forward) is recorded with its error and the others go on.

From the cells' results files (never from the objects that made them) it writes:

* ``leaderboard.csv`` / ``.json``: one row per backbone x dataset x protocol x metric x
  group with ``value, ci_low, ci_high`` (the tidy table), plus, in the JSON, failures,
  contamination, ranks, paired tests against the reference and seed comparisons;
* **contamination**: for a backbone that declares its pretraining corpus (``corpus:``
  manifests), the share of each benchmark's test images that are exact or near duplicates
  of it (``dermino.data.dedup.find_duplicates``); a row above ``contamination_threshold`` is
  not ranked unless ``allow_contaminated``;
* **paired tests** against the reference backbone on the same test images (paired bootstrap);
* **seed variance**: backbones named ``recipe@seedN`` are grouped by recipe; a recipe
  comparison reports mean +- sd over seeds beside the bootstrap CI and is marked significant
  only when every seed pair's paired-bootstrap CI excludes zero on the same side (and each
  recipe has at least ``min_seeds`` seeds).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import re
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermino.evaluate.config import BackboneSpec, DatasetSpec, EvalConfig
from dermino.evaluate.metrics import CLASSIFICATION_METRICS
from dermino.evaluate.stats import mean_std, paired_bootstrap
from dermino.files import write_text_atomic
from dermino.results import read_results, result_filename

log = logging.getLogger(__name__)

COLUMNS = ["backbone", "dataset", "protocol", "metric", "group", "value", "ci_low", "ci_high", "n"]
#: tasks whose per-image predictions are kept, so they get paired tests
PAIRED_TASKS = ("knn", "linear", "zeroshot-text")


@dataclass
class LeaderboardOptions:
    reference: str = ""  # backbone the others are compared with (default: the first)
    contamination_threshold: float = 0.05  # share of test images in the corpus above which a row is not ranked
    allow_contaminated: bool = False
    min_seeds: int = 3  # a recipe comparison needs this many seeds per recipe to be called significant
    dedup_progress: bool = False


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.@" else "-" for c in s)


def cell_dir(out: Path, bb: str, ds: str) -> Path:
    return out / "cells" / f"{_safe(bb)}__{_safe(ds)}"


def _status(path: Path) -> dict:
    try:
        return json.loads((path / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def _content(path: str | None) -> str | None:
    """Content hash of a local file (or of every file in a folder); None for a name or nothing."""
    from dermino.features.cache import file_hash

    if not path:
        return None
    p = Path(path)
    if p.is_file():
        return file_hash(p)
    if p.is_dir():
        return json.dumps({str(f.relative_to(p)): file_hash(f) for f in sorted(p.rglob("*")) if f.is_file()})
    return None


def cell_fingerprint(sub: EvalConfig) -> str:
    """What a cell's numbers depend on: its settings (not where they are written or how progress
    shows), the content of the weights (and a knowledge head beside them), of the manifest and of
    the declared corpus. A name reused for retrained weights gives a new fingerprint."""
    import hashlib

    from dermino.models.knowledge_heads import HEAD_FILE

    settings = asdict(sub)
    for key in ("out_dir", "progress", "name", "reference"):
        settings.pop(key, None)
    settings["embed"].pop("cache_dir", None)
    bb, ds = sub.backbones[0], sub.datasets[0]
    head = Path(bb.weights).parent / HEAD_FILE if bb.weights and Path(bb.weights).is_file() else None
    content = {"weights": _content(bb.weights), "head": _content(str(head)) if head and head.is_file() else None,
               "manifest": _content(ds.manifest), "corpus": [_content(c) for c in bb.corpus]}
    blob = json.dumps({"settings": settings, "content": content}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _contamination(bb: BackboneSpec, spec: DatasetSpec, ds, folder: Path, progress: bool) -> dict:
    """Share of the benchmark's test images that are exact/near duplicates of the backbone's corpus."""
    from dermino.data.dedup import DedupConfig, find_duplicates
    from dermino.data.manifest import write_manifest

    test = ds.df[ds.split == "test"].copy()
    test.attrs["root"] = ds.df.attrs.get("root")
    folder.mkdir(parents=True, exist_ok=True)
    bench = folder / "benchmark_test.csv"
    write_manifest(test, bench, root=test.attrs.get("root"))
    res = find_duplicates(list(bb.corpus), [bench], DedupConfig(cache_dir=str(folder / "dedup_cache")),
                          progress=progress)
    t = res.table
    corpus_clusters = set(t.loc[t.role == "corpus", "cluster"])
    against = t[t.role == "against"]
    hit = against["cluster"].isin(corpus_clusters)
    return {"share": float(hit.mean()) if len(against) else 0.0, "n_test": int(len(against)),
            "n_overlap": int(hit.sum()), "corpus": list(bb.corpus)}


def run_cells(cfg: EvalConfig, out: Path, opts: LeaderboardOptions) -> dict[tuple[str, str], dict]:
    """Run every unfinished (backbone, dataset) cell; return each cell's status."""
    from dermino.evaluate.runner import prepare_dataset, run_evaluation

    statuses: dict[tuple[str, str], dict] = {}
    for spec in cfg.datasets:
        prepared = None
        for bb in cfg.backbones:
            folder = cell_dir(out, bb.name, spec.name)
            sub = copy.deepcopy(cfg)
            sub.backbones, sub.datasets, sub.out_dir, sub.reference = [bb], [spec], str(folder), bb.name
            fingerprint = cell_fingerprint(sub)
            st = _status(folder)
            if st.get("status") == "done" and st.get("fingerprint") == fingerprint:
                log.info("leaderboard: %s on %s already done; skipped", bb.name, spec.name)
                statuses[(bb.name, spec.name)] = st
                continue
            if st.get("status") == "done":
                log.warning("leaderboard: %s on %s was computed from other weights, data or settings; "
                            "recomputing it", bb.name, spec.name)
                for old in (folder / "results").glob("*.json"):
                    old.unlink()  # a protocol dropped since must not linger in the table
            start = time.perf_counter()
            st = {"backbone": bb.name, "dataset": spec.name, "fingerprint": fingerprint}
            try:
                if bb.corpus:
                    prepared = prepared or prepare_dataset(spec, cfg.seed)
                    st["contamination"] = _contamination(bb, spec, prepared, folder / "contamination",
                                                         opts.dedup_progress)
                run_evaluation(sub, tables=False)
                st["status"] = "done"
            except Exception as exc:  # noqa: BLE001 - one failing backbone must not stop the others
                st["status"] = "failed"
                st["error"] = f"{type(exc).__name__}: {exc}".strip()
                st["traceback"] = traceback.format_exc(limit=6)
                log.error("leaderboard: %s on %s failed: %s", bb.name, spec.name, st["error"])
            st["seconds"] = round(time.perf_counter() - start, 2)
            folder.mkdir(parents=True, exist_ok=True)
            write_text_atomic(folder / "status.json", json.dumps(st, indent=2))
            statuses[(bb.name, spec.name)] = st
    return statuses


_GROUPED = re.compile(r"^(?P<metric>[a-z_0-9]+)@(?P<frac>[0-9.e-]+)$")


def _split_metric(task: str, name: str) -> tuple[str, str]:
    """Metric keys carry their group after ``|`` (``ece|sex=female``) or ``@`` (``auroc@0.1``)."""
    if "|" in name:
        metric, group = name.split("|", 1)
        return metric, group
    m = _GROUPED.match(name)
    if m and task == "label-efficiency":
        return m["metric"], f"fraction={m['frac']}"
    return name, ""


def tidy_rows(out: Path) -> list[dict]:
    """One row per backbone x dataset x protocol x metric x group, from every cell's results files."""
    rows = []
    for folder in sorted((out / "cells").glob("*__*")):
        for r in read_results(folder / "results") if (folder / "results").is_dir() else []:
            for name, m in r.metrics.items():
                metric, group = _split_metric(r.task, name)
                rows.append({"backbone": r.backbone, "dataset": r.dataset, "protocol": r.task, "metric": metric,
                             "group": group, "value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n})
            if r.task.startswith("fairness-"):  # per-group values live in extra
                for attr, rep in r.extra.get("attributes", {}).items():
                    for g, entry in rep.get("groups", {}).items():
                        for metric in ("auroc", "balanced_accuracy", "f1", "accuracy"):
                            if metric in entry:
                                e = entry[metric]
                                rows.append({"backbone": r.backbone, "dataset": r.dataset, "protocol": r.task,
                                             "metric": metric, "group": f"{attr}={g}", "value": e["value"],
                                             "ci_low": e["ci_low"], "ci_high": e["ci_high"], "n": entry["n"]})
    return rows


def _load_preds(out: Path, bb: str, ds: str, task: str) -> dict | None:
    path = cell_dir(out, bb, ds) / "predictions" / (Path(result_filename(bb, ds, task)).stem + ".npz")
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _paired(a: dict, b: dict, metric: str, n_resamples: int, seed: int) -> dict | None:
    if not np.array_equal(a["images"], b["images"]):
        return None
    y = a["y_true"]
    present = [int(k) for k in np.unique(y)]
    fn = CLASSIFICATION_METRICS[metric]
    comp = paired_bootstrap(lambda yy, p, fn=fn: fn(yy, p, p.argmax(1), present), y, a["probs"], b["probs"],
                            n_resamples=n_resamples, seed=seed)
    return {"a": comp.a.value, "b": comp.b.value, "diff": comp.diff.value, "ci_low": comp.diff.ci_low,
            "ci_high": comp.diff.ci_high, "p_value": comp.p_value, "method": comp.method}


def paired_tests(out: Path, cfg: EvalConfig, reference: str) -> list[dict]:
    """Every backbone against the reference, per dataset and predicted task, on the same test images."""
    rows = []
    for spec in cfg.datasets:
        for task in PAIRED_TASKS:
            ref = _load_preds(out, reference, spec.name, task)
            if ref is None:
                continue
            for bb in cfg.backbones:
                if bb.name == reference:
                    continue
                other = _load_preds(out, bb.name, spec.name, task)
                comp = _paired(other, ref, cfg.main_metric, cfg.bootstrap, cfg.seed) if other is not None else None
                if comp:
                    rows.append({"dataset": spec.name, "protocol": task, "backbone": bb.name, "reference": reference,
                                 "metric": cfg.main_metric, **comp})
    return rows


def recipe_of(name: str) -> tuple[str, str]:
    """``hybrid@seed2`` -> (``hybrid``, ``seed2``); a name without ``@`` is its own recipe."""
    recipe, _, seed = name.partition("@")
    return recipe, seed


def seed_comparisons(out: Path, cfg: EvalConfig, reference: str, min_seeds: int) -> list[dict]:
    """Recipe vs the reference's recipe over pretraining seeds: spread, per-seed paired CIs, a verdict."""
    recipes: dict[str, dict[str, str]] = {}
    for bb in cfg.backbones:
        r, s = recipe_of(bb.name)
        recipes.setdefault(r, {})[s] = bb.name
    ref_recipe = recipe_of(reference)[0]
    if ref_recipe not in recipes or all(len(v) < 2 for v in recipes.values()):
        return []
    rows = []
    for spec in cfg.datasets:
        for task in PAIRED_TASKS:
            ref_preds = {s: _load_preds(out, n, spec.name, task) for s, n in recipes[ref_recipe].items()}
            if not any(p is not None for p in ref_preds.values()):
                continue
            for recipe, seeds in recipes.items():
                if recipe == ref_recipe:
                    continue
                preds = {s: _load_preds(out, n, spec.name, task) for s, n in seeds.items()}
                common = sorted(set(preds) & set(ref_preds))
                pairs = [(s, s) for s in common] or [(a, b) for a in preds for b in ref_preds]
                comps = []
                for sa, sb in pairs:
                    if preds.get(sa) is None or ref_preds.get(sb) is None:
                        continue
                    c = _paired(preds[sa], ref_preds[sb], cfg.main_metric, cfg.bootstrap, cfg.seed)
                    if c:
                        comps.append({"seed": sa, "reference_seed": sb, **c})
                if not comps:
                    continue
                a_vals = [c["a"] for c in {c["seed"]: c for c in comps}.values()]
                b_vals = [c["b"] for c in {c["reference_seed"]: c for c in comps}.values()]
                (ma, sa_), (mb, sb_) = mean_std(a_vals), mean_std(b_vals)
                above = all(c["ci_low"] is not None and c["ci_low"] > 0 for c in comps)
                below = all(c["ci_high"] is not None and c["ci_high"] < 0 for c in comps)
                enough = len(a_vals) >= min_seeds and len(b_vals) >= min_seeds
                rows.append({
                    "dataset": spec.name, "protocol": task, "recipe": recipe, "reference_recipe": ref_recipe,
                    "metric": cfg.main_metric, "n_seeds": len(a_vals), "n_reference_seeds": len(b_vals),
                    "mean": ma, "sd": sa_, "reference_mean": mb, "reference_sd": sb_, "mean_diff": ma - mb,
                    "pairs": comps, "holds_across_seeds": bool(above or below),
                    "significant": bool(enough and (above or below)),
                    "note": "" if enough else f"fewer than {min_seeds} seeds per recipe: not called significant",
                })
    return rows


def rank_rows(rows: list[dict], statuses: dict, main_metric: str, opts: LeaderboardOptions) -> list[dict]:
    """Rank backbones per (dataset, protocol) on the main metric; contaminated rows stay unranked."""
    frame = pd.DataFrame([r for r in rows if r["metric"] == main_metric and r["group"] == ""])
    out = []
    if frame.empty:
        return out
    for (ds, task), sub in frame.groupby(["dataset", "protocol"], sort=True):
        entries = []
        for r in sub.itertuples():
            share = (statuses.get((r.backbone, ds), {}).get("contamination") or {}).get("share")
            contaminated = share is not None and share > opts.contamination_threshold
            entries.append({"dataset": ds, "protocol": task, "backbone": r.backbone, "value": r.value,
                            "contamination": share, "ranked": not contaminated or opts.allow_contaminated})
        ranked = sorted((e for e in entries if e["ranked"] and e["value"] is not None
                         and math.isfinite(e["value"])), key=lambda e: -e["value"])
        for i, e in enumerate(ranked, 1):
            e["rank"] = i
        for e in entries:
            e.setdefault("rank", None)
            if not e["ranked"]:
                e["note"] = f"not ranked: {e['contamination']:.1%} of test images in the declared corpus"
        out += sorted(entries, key=lambda e: (e["rank"] is None, e["rank"] or 0))
    return out


def run_leaderboard(cfg: EvalConfig, opts: LeaderboardOptions | None = None) -> Path:
    """Run (or resume) every cell, then write the tidy table and its summaries; return the folder."""
    from dermino.config import save_config

    opts = opts or LeaderboardOptions()
    cfg.validate()
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    reference = opts.reference or cfg.reference or cfg.backbones[0].name
    statuses = run_cells(cfg, out, opts)
    rows = tidy_rows(out)
    for (bb, ds), st in statuses.items():
        if "contamination" in st:
            c = st["contamination"]
            rows.append({"backbone": bb, "dataset": ds, "protocol": "contamination", "metric": "share_in_corpus",
                         "group": "", "value": c["share"], "ci_low": None, "ci_high": None, "n": c["n_test"]})
    frame = pd.DataFrame(rows, columns=COLUMNS)
    write_text_atomic(out / "leaderboard.csv", frame.to_csv(index=False))
    summary = {
        "preset": cfg.preset, "reference": reference, "main_metric": cfg.main_metric,
        "options": asdict(opts), "columns": COLUMNS, "rows": rows,
        "cells": [{k: v for k, v in st.items() if k != "traceback"} for st in statuses.values()],
        "failures": [{"backbone": b, "dataset": d, "error": st.get("error", "")}
                     for (b, d), st in statuses.items() if st.get("status") == "failed"],
        "ranks": rank_rows(rows, statuses, cfg.main_metric, opts),
        "paired_tests": paired_tests(out, cfg, reference),
        "seed_comparisons": seed_comparisons(out, cfg, reference, opts.min_seeds),
    }
    write_text_atomic(out / "leaderboard.json", json.dumps(summary, indent=2, default=_json_default))
    return out


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(type(obj).__name__)


def demo_leaderboard(backbones: list[BackboneSpec], datasets: list[DatasetSpec], out_dir: str | Path,
                     embed: dict | None = None, preset: str = "dermino-paper", bootstrap: int = 200,
                     reference: str = "") -> Path:
    """A small leaderboard for ``dermino demo`` (the demo wires it in and renders
    ``dermino.report.leaderboard.write_leaderboard_report`` on the returned folder).

    Cheap settings for a CPU budget: a two-value C grid, 200 bootstrap resamples, no skin-tone
    estimate; resumable like any leaderboard, so a demo rerun costs only unfinished cells."""
    from dermino.config import check_config, from_dict
    from dermino.evaluate.presets import preset_data

    data = preset_data(preset, {
        "out_dir": str(out_dir), "bootstrap": bootstrap, "progress": False,
        "backbones": [asdict(b) for b in backbones], "datasets": [asdict(d) for d in datasets],
        "embed": embed or {}, "linear": {"Cs": [0.1, 1.0]},
        "fairness": {"attributes": ["fitzpatrick", "sex", "age"], "min_group_size": 10},
        "label_efficiency": {"fractions": [0.1, 0.3, 1.0], "seeds": 3},
    })
    cfg = check_config(from_dict(EvalConfig, data, where="demo leaderboard"), "demo leaderboard")
    cfg.preset = preset
    return run_leaderboard(cfg, LeaderboardOptions(reference=reference))
