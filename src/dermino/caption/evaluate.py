"""Score a captioner on a held-out split: caption metrics and clinical correctness, with CIs.

Writes the evaluation suite's results JSON (``dermino.results``, task ``captioning``) and a
``predictions.csv`` (image, source, labels, reference, generated, diagnosis correct) that the
report reads for its examples. Intervals are 95 % percentile bootstraps over test images
(``evaluate/stats.py``): corpus BLEU and sacreBLEU are recomputed on every resample; metrics that
are a mean of per-caption scores (CIDEr-D with this corpus' document frequencies, ROUGE,
METEOR's per-segment scores, diagnosis accuracy) resample those scores.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dermino.caption.clinical import CRITERIA, clinical_scores, stated_criteria, true_criteria_ph2
from dermino.caption.data import CaptionExample
from dermino.caption.metrics import bleu_tokenized, caption_scores, sacrebleu_corpus
from dermino.evaluate.stats import bootstrap_ci
from dermino.results import Metric, Result, result_filename, write_result

log = logging.getLogger(__name__)
TASK = "captioning"


def score_captions(
    generated: Sequence[str],
    examples: Sequence[CaptionExample],
    criteria_truth: Sequence[set[str] | None],
    n_bootstrap: int = 1000,
    seed: int = 0,
    use_meteor: bool = True,
) -> tuple[dict[str, Metric], dict]:
    """Metrics with bootstrap CIs, and the extras (per-criterion scores, notes, per-source values)."""
    refs = [[e.caption] for e in examples]
    scores = caption_scores(generated, refs, use_meteor=use_meteor)
    n = len(generated)
    idx = np.arange(n)
    gen_arr = np.asarray(generated, dtype=object)
    ref_arr = np.asarray([e.caption for e in examples], dtype=object)
    metrics: dict[str, Metric] = {}

    def mean_ci(values: np.ndarray, value: float | None = None) -> Metric:
        m = bootstrap_ci(lambda v: float(np.mean(v)), np.asarray(values, float), n_resamples=n_bootstrap, seed=seed)
        if value is not None:
            m.value = value
        return m

    gts, res = scores.tokenized  # tokenized once, for every metric and every bootstrap resample
    for k in (1, 2, 4):
        def corpus_bleu(rows: np.ndarray, k: int = k) -> float:
            sub_gts = {j: gts[int(i)] for j, i in enumerate(rows)}
            sub_res = {j: res[int(i)] for j, i in enumerate(rows)}
            return bleu_tokenized(sub_gts, sub_res)[0][k - 1]
        metrics[f"bleu{k}"] = bootstrap_ci(corpus_bleu, idx, n_resamples=n_bootstrap, seed=seed)
    for name in ("cider", "rougeL_coco", "rouge1", "rouge2", "rougeL"):
        metrics[name] = mean_ci(scores.per_caption[name], scores.corpus[name])
    if "meteor" in scores.corpus:
        metrics["meteor"] = mean_ci(scores.per_caption["meteor"], scores.corpus["meteor"])
    metrics["sacrebleu"] = bootstrap_ci(
        lambda rows: sacrebleu_corpus(list(gen_arr[rows]), [[r] for r in ref_arr[rows]])[0],
        idx, n_resamples=max(50, n_bootstrap // 5), seed=seed,
    )
    clin = clinical_scores(generated, [e.labels for e in examples], criteria_truth)
    metrics["diagnosis_accuracy"] = mean_ci(clin.diagnosis_correct.astype(float))
    has = np.array([t is not None for t in criteria_truth])
    if has.any():
        names = list(CRITERIA)
        stated = np.array([[c in stated_criteria(g) for c in names] for g, h in zip(generated, has, strict=True) if h])
        truth = np.array([[c in t for c in names] for t in criteria_truth if t is not None])

        def macro(s: np.ndarray, t: np.ndarray, which: str) -> float:
            tp = (s & t).sum(0)
            den = s.sum(0) if which == "precision" else t.sum(0)
            ok = den > 0
            return float(np.mean(tp[ok] / den[ok])) if ok.any() else float("nan")

        for which in ("precision", "recall"):
            metrics[f"criteria_{which}_macro"] = bootstrap_ci(
                lambda s, t, w=which: macro(s, t, w), stated, truth, n_resamples=n_bootstrap, seed=seed)
    extra = {
        "criteria": clin.criteria,
        "criteria_rows": clin.criteria_rows,
        "notes": scores.notes,
        "meteor_skipped": "meteor" not in scores.corpus,
        "ci_method": "percentile bootstrap over test images; BLEU/sacreBLEU recomputed per resample, "
                     "CIDEr/ROUGE/METEOR/diagnosis accuracy from per-caption scores",
    }
    by_source = {}
    for src in sorted({e.source for e in examples}):
        rows = [i for i, e in enumerate(examples) if e.source == src]
        by_source[src] = {
            "n": len(rows),
            "diagnosis_accuracy": float(clin.diagnosis_correct[rows].mean()),
            "cider": float(scores.per_caption["cider"][rows].mean()),
            "rougeL": float(scores.per_caption["rougeL"][rows].mean()),
        }
    extra["by_source"] = by_source
    return metrics, extra


def write_predictions(path: Path, examples: Sequence[CaptionExample], generated: Sequence[str],
                      correct: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "source", "labels", "reference", "generated", "diagnosis_correct"])
        for e, g, c in zip(examples, generated, correct, strict=True):
            w.writerow([str(e.image), e.source, ";".join(e.labels), e.caption, g, int(bool(c))])
    tmp.replace(path)
    return path


def evaluation_result(
    name: str, dataset: str, generated: Sequence[str], examples: Sequence[CaptionExample],
    criteria_truth: Sequence[set[str] | None], out_dir: str | Path, config: dict | None = None,
    n_bootstrap: int = 1000, seed: int = 0, use_meteor: bool = True, extra: dict | None = None,
) -> tuple[Result, Path]:
    """Score, then write ``<name>__<dataset>__captioning.json`` and ``<name>__<dataset>__predictions.csv``."""
    metrics, ex = score_captions(generated, examples, criteria_truth, n_bootstrap, seed, use_meteor)
    out_dir = Path(out_dir)
    clin = clinical_scores(generated, [e.labels for e in examples], criteria_truth)
    pred_name = result_filename(name, dataset, "predictions").removesuffix(".json") + ".csv"
    pred = write_predictions(out_dir / pred_name, examples, generated, clin.diagnosis_correct)
    ex.update(extra or {})
    ex["predictions"] = pred.name
    result = Result(backbone=name, dataset=dataset, task=TASK, metrics=metrics, config=config or {}, extra=ex)
    write_result(result, out_dir)
    return result, pred


def evaluate_run(
    run_dir: str | Path,
    manifests: Sequence[str] | None = None,
    split: str | None = None,
    out_dir: str | Path | None = None,
    num_beams: int | None = None,
    max_new_tokens: int | None = None,
    n_bootstrap: int | None = None,
    name: str | None = None,
    device: str = "cpu",
    lm=None,
    tokenizer=None,
) -> Result:
    """Generate captions for a split of the run's (or the given) manifests and score them."""
    from dermino.caption.data import load_examples
    from dermino.caption.generate import encode_paths, generate_captions
    from dermino.caption.model import load_captioner
    from dermino.data.manifest import read_manifest, resolve

    run = Path(run_dir)
    cap = load_captioner(run, lm=lm, tokenizer=tokenizer, device=device)
    meta = json.loads((run / "captioner.json").read_text())
    cfg = meta.get("config", {})
    manifests = list(manifests or cfg.get("manifests") or [])
    if not manifests:
        raise ValueError(f"{run}: no manifests given and none recorded in the run")
    split = split or cfg.get("test_split", "test")
    examples, skipped = load_examples(manifests, split, int(cfg.get("max_test", 0) or 0), int(cfg.get("seed", 0)))
    if not examples:
        raise ValueError(f"no captioned images in split {split!r} of {manifests} ({skipped} without caption)")
    lookup = {}
    for m in manifests:
        df = read_manifest(m)
        for row in df.to_dict("records"):
            lookup[os.path.normpath(str(resolve(df, row["image"])))] = row
    truth = [true_criteria_ph2(lookup.get(os.path.normpath(str(e.image)), {})) for e in examples]
    image_size = int(meta.get("image_size", cfg.get("image_size", 224)))
    feats = encode_paths(cap, [e.image for e in examples], image_size, progress=bool(cfg.get("progress", True)))
    beams = num_beams or int(cfg.get("num_beams", 1))
    generated = generate_captions(cap, feats, max_new_tokens=max_new_tokens or int(cfg.get("max_new_tokens", 64)),
                                  num_beams=beams, progress=bool(cfg.get("progress", True)))
    dataset = "+".join(Path(m).stem for m in manifests) + f":{split}"
    label = name or run.name
    result, _ = evaluation_result(
        label, dataset, generated, examples, truth, out_dir or run / "results",
        config={"run": str(run), "spec": meta.get("spec"), "num_beams": beams, "split": split},
        n_bootstrap=n_bootstrap or int(cfg.get("bootstrap", 1000)), use_meteor=bool(cfg.get("meteor", True)),
        extra={"skipped_no_caption": skipped, "train_steps": meta.get("steps"),
               "seconds_per_step": meta.get("seconds_per_step"), "peak_memory_mb": meta.get("peak_memory_mb")},
    )
    return result
