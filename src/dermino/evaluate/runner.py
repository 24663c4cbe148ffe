"""Run an evaluation config: backbones x datasets x protocols -> results JSON, tables, plots.

Layout of ``out_dir``::

    config.yaml                the resolved config
    results/*.json             one per (backbone, dataset, task) via dermino.results
    predictions/*.npz          test predictions per cell (for paired comparisons)
    tables/summary.{md,csv,html}, tables/comparisons.json
    plots/*.png

Features are extracted once per (backbone, dataset) through the embedding cache and every
protocol reads them; test labels are only used to score predictions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dermino.config import save_config, to_dict
from dermino.data.check import check_images
from dermino.data.manifest import read_manifest, split_labels
from dermino.evaluate.config import BackboneSpec, DatasetSpec, EvalConfig
from dermino.evaluate.fairness import fairness_report, group_columns
from dermino.evaluate.fewshot import run_fewshot
from dermino.evaluate.knn import knn_protocol
from dermino.evaluate.linear import linear_protocol
from dermino.evaluate.metrics import CLASSIFICATION_METRICS, ORDINAL_METRICS, classification_summary
from dermino.evaluate.splits import carve_validation
from dermino.evaluate.stats import bootstrap_ci
from dermino.evaluate.task import EvalTask, Predictions
from dermino.features import extract_embeddings
from dermino.files import atomic_path
from dermino.results import Metric, Result, result_filename, write_result

log = logging.getLogger(__name__)


@dataclass
class PreparedDataset:
    df: pd.DataFrame  # the rows evaluated (train/val/test only), manifest attrs kept
    y: np.ndarray
    split: np.ndarray
    groups: np.ndarray
    class_names: list[str]


def _first_label(value: object) -> str:
    labels = split_labels(value)
    return labels[0] if labels else ""


def prepare_dataset(spec: DatasetSpec, seed: int = 0) -> PreparedDataset:
    """Read the manifest, choose labels and splits, carve validation by group if needed."""
    df = read_manifest(spec.manifest)
    root = df.attrs.get("root")
    if spec.assign_test_fraction > 0:
        from dermino.data.splits import assign_splits

        df = assign_splits(df, test_fraction=spec.assign_test_fraction, val_fraction=0.0, seed=seed)
        df.attrs["root"] = root
    if spec.label_column not in df.columns:
        raise ValueError(f"{spec.manifest}: no column {spec.label_column!r} (columns: {list(df.columns)})")
    raw = [_first_label(v) for v in df[spec.label_column]]
    if spec.val_split and spec.val_split == spec.test_split:
        raise ValueError(
            f"dataset {spec.name}: val_split and test_split are both {spec.val_split!r}; "
            "set val_split: '' to carve validation from train"
        )
    split_map = {"train": "train", spec.test_split: "test"}
    if spec.val_split:  # '' = no manifest validation split: carve one from train by group
        split_map[spec.val_split] = "val"
    split = np.array([split_map.get(str(s), "none") for s in df["split"]])
    labelled = np.array([bool(r) for r in raw])
    keep = labelled & (split != "none")
    if (split == "test").any() and not (keep & (split == "test")).any():
        raise ValueError(f"{spec.manifest}: the {spec.test_split!r} rows carry no labels in {spec.label_column!r}")
    if not (keep & (split == "test")).any():
        raise ValueError(f"{spec.manifest}: no labelled rows with split {spec.test_split!r}")
    if not (keep & (split == "train")).any():
        raise ValueError(f"{spec.manifest}: no labelled train rows")
    dropped = int((split != "none").sum() - keep.sum())
    if dropped:
        log.info("%s: %d rows without a label skipped", spec.name, dropped)
    df = df[keep].reset_index(drop=True)
    df.attrs["root"] = root
    raw = [r for r, k in zip(raw, keep, strict=True) if k]
    split = split[keep]

    if spec.positive:
        y = np.array([int(r == spec.positive) for r in raw])
        class_names = [f"not {spec.positive}", spec.positive]
        if not y.any():
            raise ValueError(f"{spec.manifest}: positive label {spec.positive!r} never occurs")
    else:
        class_names = list(spec.classes) or sorted(set(raw))
        index = {c: i for i, c in enumerate(class_names)}
        missing = sorted(set(raw) - set(index))
        if missing:
            raise ValueError(f"{spec.manifest}: labels {missing} are not in the configured classes")
        y = np.array([index[r] for r in raw])

    groups = _groups(df)
    rng = np.random.default_rng(seed)
    sel = np.ones(len(df), dtype=bool)
    for name, cap in (("train", spec.max_train), ("test", spec.max_test)):
        rows = np.flatnonzero(split == name)
        if cap and len(rows) > cap:
            sel[rng.choice(rows, size=len(rows) - cap, replace=False)] = False
    if spec.max_train:  # keep validation proportional to the reduced train set
        rows = np.flatnonzero(split == "val")
        cap = max(1, int(round(spec.max_train * spec.val_fraction)))
        if len(rows) > cap:
            sel[rng.choice(rows, size=len(rows) - cap, replace=False)] = False
    df, y, split, groups = df[sel].reset_index(drop=True), y[sel], split[sel], groups[sel]
    df.attrs["root"] = root
    if not (split == "val").any():
        tr = np.flatnonzero(split == "train")
        val = carve_validation(groups[tr], y[tr], spec.val_fraction, seed)
        split[tr[val]] = "val"
        log.info("%s: carved %d validation rows from train by group", spec.name, int(val.sum()))
    return PreparedDataset(df, y, split, groups, class_names)


def _groups(df: pd.DataFrame) -> np.ndarray:
    """lesion_id, else patient_id, else the image itself."""
    out = df["image"].astype(str).to_numpy().copy()
    for col in ("patient_id", "lesion_id"):  # lesion_id wins where both are set
        if col in df.columns:
            vals = df[col].astype(str).to_numpy()
            has = (vals != "") & (vals != "nan")
            out[has] = vals[has]
    return out


def _metrics_with_ci(preds: Predictions, cfg: EvalConfig, ordinal: bool = False) -> dict[str, Metric]:
    present = [int(k) for k in np.unique(preds.y_true)]
    out = {}
    metrics = {**CLASSIFICATION_METRICS, **(ORDINAL_METRICS if ordinal else {})}
    for name, fn in metrics.items():
        out[name] = bootstrap_ci(
            lambda y, pr, pd_, fn=fn: fn(y, pr, pd_, present),
            preds.y_true, preds.probs, preds.pred, n_resamples=cfg.bootstrap, seed=cfg.seed,
        )
    return out


def _save_predictions(path: Path, preds: Predictions, images: np.ndarray, classes: list[str]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(
            fh, images=images[preds.rows].astype(str), y_true=preds.y_true, probs=preds.probs,
            pred=preds.pred, class_names=np.array(classes),
        )


def _skin_tone(ds: PreparedDataset, progress: bool) -> None:
    """Add ``skin_tone`` (ITA category) to the test rows' table, in place."""
    from dermino.evaluate.skin_tone import estimate_skin_tone

    test = np.flatnonzero(ds.split == "test")
    sub = ds.df.iloc[test].copy()
    sub.attrs["root"] = ds.df.attrs.get("root")
    tones = estimate_skin_tone(sub, progress=progress)
    ds.df["ita"] = np.nan
    ds.df["skin_tone"] = ""
    ds.df.loc[ds.df.index[test], "ita"] = tones["ita"].to_numpy()
    ds.df.loc[ds.df.index[test], "skin_tone"] = tones["skin_tone"].to_numpy()


def preflight(cfg: EvalConfig) -> list[PreparedDataset]:
    """Build every backbone (with its weights), read every manifest and decode every image evaluated;
    raise one error listing every problem, so a typo in the last backbone or a missing image of the
    last dataset is found before hours are spent on the first (and before anything is written)."""
    from dermino.models import create

    problems = []
    for bb in cfg.backbones:
        if bb.weights and not Path(bb.weights).is_file():
            problems.append(f"backbone {bb.name!r}: weights file not found: {bb.weights}")
            continue
        try:
            model = create(bb.model or bb.name, weights=bb.weights, **bb.overrides)
            del model
        except Exception as exc:  # unknown name, bad overrides, weights that do not fit
            problems.append(f"backbone {bb.name!r}: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}")
    prepared = []
    for spec in cfg.datasets:
        try:
            prepared.append(prepare_dataset(spec, cfg.seed))
        except Exception as exc:  # missing / unreadable manifest, missing label column, no test rows
            problems.append(f"dataset {spec.name!r}: {exc}")
            continue
        problems += _bad_images(spec.name, prepared[-1].df, cfg)
    if problems:
        raise ValueError("evaluate: nothing was computed or written; fix first:\n  - " + "\n  - ".join(problems))
    return prepared


def _bad_images(name: str, df: pd.DataFrame, cfg: EvalConfig) -> list[str]:
    """Every image of the rows evaluated that does not decode (``dermino data check``'s parallel check).

    Skipped when embeddings read a ``dermino data cache`` folder: the originals need not be there,
    and the cache verifies its own files when opened.
    """
    if cfg.embed.image_cache:
        return []
    bad = check_images(df, workers=os.cpu_count() or 1, masks=False, progress=cfg.progress)
    return [f"dataset {name!r}: unreadable image {b.path}: {b.reason}" for b in bad]


def _zero_shot(cfg: EvalConfig, bb: BackboneSpec, spec: DatasetSpec, out: Path) -> None:
    """Zero-shot diagnosis from the dataset's class names through the backbone's knowledge head."""
    from dermino.evaluate.zero_shot import head_path_for, run_zero_shot

    if not bb.weights or not head_path_for(bb.weights, cfg.zeroshot.head).is_file():
        log.info("zeroshot: %s has no exported knowledge head; skipped", bb.name)
        return
    run_zero_shot(bb.model or bb.name, bb.weights, spec.manifest, cfg.zeroshot, overrides=bb.overrides,
                  embed=cfg.embed, bootstrap=cfg.bootstrap, seed=cfg.seed, dataset=spec.name, name=bb.name,
                  out_dir=out / "results", progress=cfg.progress)


def _calibration(cfg: EvalConfig, bb: BackboneSpec, spec: DatasetSpec, preds: Predictions,
                 attrs: dict[str, np.ndarray], common: dict, out: Path) -> None:
    """Per-group ECE (after temperature scaling on validation) and equalised-odds gaps, with CIs."""
    from dermino.evaluate.calibration import flagged_gaps, group_calibration_report

    if preds.val_probs is None:
        log.info("calibration: %s predictions carry no validation rows; skipped", cfg.fairness.protocol)
        return
    rep = group_calibration_report(preds, attrs, preds.probs.shape[1], cfg.calibration,
                                   n_resamples=cfg.bootstrap, seed=cfg.seed)
    metrics = {"ece": Metric(**rep["overall"]["ece_after"]), "ece_before": Metric(**rep["overall"]["ece_before"])}
    for attr, entry in rep["attributes"].items():
        for g, e in entry["groups"].items():
            metrics[f"ece|{attr}={g}"] = Metric(**e["ece"])
        gaps = [(f"ece_gap|{attr}", entry.get("ece_gap"))] + [
            (f"{r}_gap|{attr}|class={c}", cls[f"{r}_gap"])
            for c, cls in entry.get("equalized_odds", {}).items() for r in ("tpr", "fpr")]
        for key, gap in gaps:
            if gap:
                metrics[key] = Metric(gap["value"], gap["ci_low"], gap["ci_high"])
    flags = flagged_gaps(rep)
    if flags:
        log.warning("%s on %s: %d calibration / equalised-odds gap(s) with a CI excluding zero, e.g. %s",
                    bb.name, spec.name, len(flags), flags[0])
    write_result(Result(bb.name, spec.name, f"calibration-{cfg.fairness.protocol}", metrics,
                        config={**common, "calibration": asdict(cfg.calibration), "fairness": asdict(cfg.fairness)},
                        extra={"report": rep, "flags": flags}), out / "results")


def _proj_features(model: torch.nn.Module, ds: PreparedDataset, cfg: EvalConfig, bb: BackboneSpec) -> np.ndarray:
    """The joint image-text embedding (pool ``proj``) of every row, through the same cache."""
    from dataclasses import replace

    emb = extract_embeddings(model, ds.df, replace(cfg.embed, pool="proj"), weights=bb.weights, model_name=bb.name,
                             progress=cfg.progress)
    return emb.features


def _zero_shot_text(cfg: EvalConfig, bb: BackboneSpec, spec: DatasetSpec, ds: PreparedDataset,
                    model: torch.nn.Module, common: dict, out: Path, images: np.ndarray) -> None:
    """Zero-shot through the backbone's own text tower, when it has one and the dataset a prompts file."""
    from dermino.evaluate.zero_shot_text import (
        class_text_embeddings,
        find_prompts,
        load_prompts,
        to_task_classes,
        zero_shot_text_probs,
    )
    from dermino.models.text import text_tower

    tower = text_tower(model)
    path = find_prompts(spec.name, spec.prompts)
    if tower is None or path is None:
        log.info("zero-shot (text): %s on %s skipped (%s)", bb.name, spec.name,
                 "no text tower" if tower is None else "no prompts file")
        return
    prompts = load_prompts(path)
    names, text = class_text_embeddings(tower, prompts)
    te = np.flatnonzero(ds.split == "test")
    proj = _proj_features(model, ds, cfg, bb)[te]
    probs = to_task_classes(zero_shot_text_probs(proj, text, float(tower.logit_scale)), names, ds.class_names,
                            spec.positive)
    preds = Predictions(rows=te, y_true=ds.y[te], probs=probs, pred=probs.argmax(1))
    task = "zeroshot-text"
    write_result(Result(bb.name, spec.name, task, _metrics_with_ci(preds, cfg),
                        config={**common, "prompts_file": str(path), "template": tower.template},
                        extra={"prompt_classes": names, "class_names": ds.class_names,
                               "logit_scale": float(tower.logit_scale)}), out / "results")
    stem = Path(result_filename(bb.name, spec.name, task)).stem
    _save_predictions(out / "predictions" / f"{stem}.npz", preds, images, ds.class_names)


def _label_efficiency(cfg: EvalConfig, bb: BackboneSpec, spec: DatasetSpec, task: EvalTask, common: dict,
                      out: Path) -> None:
    from dermino.evaluate.label_efficiency import run_label_efficiency

    res = run_label_efficiency(task, cfg.label_efficiency, cfg.linear, n_resamples=cfg.bootstrap, seed=cfg.seed)
    metric = cfg.label_efficiency.metric
    metrics = {f"{metric}@{p['fraction']:g}": Metric(p["value"], p["ci_low"], p["ci_high"], n=p["n_labelled"])
               for p in res["points"]}
    metrics["aulc"] = Metric(res["aulc"]["value"], res["aulc"]["ci_low"], res["aulc"]["ci_high"])
    write_result(Result(bb.name, spec.name, "label-efficiency", metrics,
                        config={**common, "label_efficiency": asdict(cfg.label_efficiency),
                                "linear": asdict(cfg.linear)}, extra=res), out / "results")


def _retrieval(cfg: EvalConfig, bb: BackboneSpec, spec: DatasetSpec, ds: PreparedDataset, task: EvalTask,
               model: torch.nn.Module, common: dict, out: Path) -> None:
    """Image-to-image by diagnosis (test queries, train+val bank); image-to-text where captions exist."""
    from dermino.evaluate.retrieval import image_to_image, image_to_text
    from dermino.models.text import text_tower

    bank = np.concatenate([task.rows("train"), task.rows("val")])
    te = task.rows("test")
    metrics = image_to_image(task.features[te], task.y[te], task.features[bank], task.y[bank],
                             cfg.retrieval.ks, n_resamples=cfg.bootstrap, seed=cfg.seed)
    extra: dict = {"bank": "train+val", "queries": "test", "relevant": "same diagnosis"}
    tower = text_tower(model)
    col = spec.caption_column
    if tower is not None and col in ds.df.columns:
        caps = ds.df[col].fillna("").astype(str).to_numpy()[te]
        has = np.flatnonzero(caps != "")
        if len(has) >= 2:
            with torch.inference_mode():
                text = np.asarray(tower.encode(list(caps[has])), dtype=np.float32)
            proj = _proj_features(model, ds, cfg, bb)[te][has]
            metrics.update(image_to_text(proj, text, caps[has], cfg.retrieval.ks, cfg.bootstrap, cfg.seed))
            extra["image_to_text"] = {"queries": int(len(has)), "caption_column": col}
    write_result(Result(bb.name, spec.name, "retrieval", metrics,
                        config={**common, "retrieval": asdict(cfg.retrieval)}, extra=extra), out / "results")


def run_evaluation(cfg: EvalConfig, tables: bool = True) -> Path:
    """Evaluate every backbone on every dataset; return the output folder.

    ``tables=False`` writes results and predictions only (the leaderboard runs one cell at a
    time and builds its own table and plots from all cells' files)."""
    from dermino.evaluate.plots import make_plots
    from dermino.evaluate.tables import write_tables
    from dermino.models import create

    cfg.validate()
    prepared = preflight(cfg)  # every backbone, weights file and manifest, before anything is written
    out = Path(cfg.out_dir)
    (out / "results").mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    protocols = {"knn": lambda t: knn_protocol(t, cfg.knn, cfg.progress),
                 "linear": lambda t: linear_protocol(t, cfg.linear)}
    for spec, ds in zip(cfg.datasets, prepared, strict=True):
        log.info("%s: %s", spec.name, {s: int((ds.split == s).sum()) for s in ("train", "val", "test")})
        attrs: dict[str, np.ndarray] = {}
        if "fairness" in cfg.protocols or "calibration" in cfg.protocols:
            if "skin_tone" in cfg.fairness.attributes:
                _skin_tone(ds, cfg.progress)
            test = ds.split == "test"
            attrs = {k: v[test] for k, v in group_columns(ds.df, cfg.fairness.attributes).items()}
        images = ds.df["image"].astype(str).to_numpy()
        for bb in cfg.backbones:
            torch.manual_seed(cfg.seed)  # random-init baselines are the same model on every run
            model = create(bb.model or bb.name, weights=bb.weights, **bb.overrides)
            emb = extract_embeddings(model, ds.df, cfg.embed, weights=bb.weights, model_name=bb.name,
                                     progress=cfg.progress)
            task = EvalTask(emb.features, ds.y, ds.split, ds.class_names, ds.groups)
            common = {
                "dataset": asdict(spec), "embed": to_dict(cfg.embed), "embedding_key": emb.key,
                "transform": emb.meta["transform"], "preprocessing": emb.meta.get("preprocessing"),
                "backbone": asdict(bb), "seed": cfg.seed, "bootstrap": cfg.bootstrap,
                "n": {s: int((ds.split == s).sum()) for s in ("train", "val", "test")},
                "ci": "percentile bootstrap, 95 %",
            }
            by_protocol: dict[str, Predictions] = {}
            needed = set(cfg.protocols) | ({cfg.fairness.protocol} if "calibration" in cfg.protocols else set())
            for name in ("knn", "linear"):
                if name not in needed:
                    continue
                preds = protocols[name](task)
                by_protocol[name] = preds
                summary = classification_summary(preds.y_true, preds.probs, preds.pred, ds.class_names)
                res = Result(
                    backbone=bb.name, dataset=spec.name, task=name, metrics=_metrics_with_ci(preds, cfg, spec.ordinal),
                    config={**common, name: asdict(getattr(cfg, name))},
                    extra={"per_class": summary["per_class"], "absent": summary["absent"],
                           "class_names": ds.class_names, "selection": preds.info},
                )
                write_result(res, out / "results")
                stem = Path(result_filename(bb.name, spec.name, name)).stem
                _save_predictions(out / "predictions" / f"{stem}.npz", preds, images, ds.class_names)
            if "zeroshot" in cfg.protocols:
                _zero_shot(cfg, bb, spec, out)
                _zero_shot_text(cfg, bb, spec, ds, model, common, out, images)
            if "label_efficiency" in cfg.protocols:
                _label_efficiency(cfg, bb, spec, task, common, out)
            if "retrieval" in cfg.protocols:
                _retrieval(cfg, bb, spec, ds, task, model, common, out)
            if "fewshot" in cfg.protocols:
                curves = run_fewshot(task, cfg.fewshot, cfg.knn, cfg.linear)
                metrics = {}
                for p, kinds in curves.items():
                    for kind, settings in kinds.items():
                        for setting, entry in settings.items():
                            tag = f"{p}_{setting}shot" if kind == "shots" else f"{p}_{float(setting):g}frac"
                            metrics[tag] = Metric(entry[cfg.main_metric]["mean"], n=entry["n_labelled"])
                write_result(Result(bb.name, spec.name, "fewshot", metrics,
                                    config={**common, "fewshot": asdict(cfg.fewshot)},
                                    extra={"curves": curves, "main_metric": cfg.main_metric}), out / "results")
            if "fairness" in cfg.protocols and attrs:
                preds = by_protocol[cfg.fairness.protocol]
                rep = fairness_report(preds, attrs, len(ds.class_names), n_resamples=cfg.bootstrap,
                                      seed=cfg.seed, min_group_size=cfg.fairness.min_group_size)
                metrics = {}
                for attr, r in rep.items():
                    metrics[f"{attr}_gap_{cfg.main_metric}"] = Metric(r["gap"][cfg.main_metric])
                    metrics[f"{attr}_dp_diff"] = Metric(r["demographic_parity_difference"])
                    metrics[f"{attr}_eo_diff"] = Metric(r["equalized_odds_difference"])
                write_result(Result(bb.name, spec.name, f"fairness-{cfg.fairness.protocol}", metrics,
                                    config={**common, "fairness": asdict(cfg.fairness)},
                                    extra={"attributes": rep}), out / "results")
            if "calibration" in cfg.protocols and attrs:
                _calibration(cfg, bb, spec, by_protocol[cfg.fairness.protocol], attrs, common, out)
    if not tables:
        return out
    write_tables(out, reference=cfg.reference or cfg.backbones[0].name, metric=cfg.main_metric,
                 n_resamples=cfg.bootstrap, seed=cfg.seed)
    make_plots(out, metric=cfg.main_metric)
    return out
