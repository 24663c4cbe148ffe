"""Score a captioner on a held-out split: caption metrics and clinical correctness, with CIs.

Writes the evaluation suite's results JSON (``dermino.results``, task ``captioning``) and a
``predictions.csv`` (image, source, labels, reference, generated, diagnosis correct) that the
report reads for its examples. Intervals are 95 % percentile bootstraps over test images
(``evaluate/stats.py``): corpus BLEU and sacreBLEU are recomputed on every resample; metrics that
are a mean of per-caption scores (CIDEr-D with this corpus' document frequencies, ROUGE,
METEOR's per-segment scores, diagnosis accuracy) resample those scores.

The grounding control (``extra["grounding"]``, :mod:`dermino.caption.grounding`) captions every
image again from a different-diagnosis partner's features and writes those captions to
``<name>__<dataset>__swapped.csv``: the paired difference says whether the text follows the image.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch

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
    grounding: bool | None = None,
    vqa: bool | None = None,
) -> Result:
    """Generate captions for a split of the run's (or the given) manifests and score them.

    With ``grounding`` (default: the run's ``grounding_control``, on) and an image-reading
    captioner, every image is captioned again from a different-diagnosis partner's features
    (:mod:`dermino.caption.grounding`) and the paired difference goes into the results.
    Images with PH2 criteria annotations are also asked one yes/no question per criterion
    (:mod:`dermino.caption.vqa`; default: when the run trained on them, ``vqa=True`` asks any
    captioner, e.g. the language model alone), with the same swapped-image control.
    """
    from dermino.caption.data import example_rows, load_examples
    from dermino.caption.generate import encode_paths, generate_captions
    from dermino.caption.model import load_captioner

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
    truth = [true_criteria_ph2(row) for row in example_rows(manifests, examples)]
    image_size = int(meta.get("image_size", cfg.get("image_size", 224)))
    feats = encode_paths(cap, [e.image for e in examples], image_size, progress=bool(cfg.get("progress", True)),
                         cache_dir=str(cfg.get("feature_cache", "") or ""))
    beams = num_beams or int(cfg.get("num_beams", 1))
    generated = generate_captions(cap, feats, max_new_tokens=max_new_tokens or int(cfg.get("max_new_tokens", 64)),
                                  num_beams=beams, progress=bool(cfg.get("progress", True)))
    dataset = "+".join(Path(m).stem for m in manifests) + f":{split}"
    label = name or run.name
    boot = n_bootstrap or int(cfg.get("bootstrap", 1000))
    extra = {"skipped_no_caption": skipped, "train_steps": meta.get("steps"),
             "seconds_per_step": meta.get("seconds_per_step"), "peak_memory_mb": meta.get("peak_memory_mb")}
    if grounding is None:
        grounding = bool(cfg.get("grounding_control", True))
    if grounding and cap.uses_image:
        extra["grounding"] = _grounding(cap, feats, examples, generated, truth, beams, boot,
                                        int(cfg.get("seed", 0)), out_dir or run / "results", label, dataset,
                                        max_new_tokens or int(cfg.get("max_new_tokens", 64)),
                                        bool(cfg.get("progress", True)))
    elif grounding:
        extra["grounding"] = {"skipped": "the language model alone reads no image: nothing to swap"}
    if vqa is None:  # a captioner trained on the questions is asked them (and its baselines are, when told)
        vqa = bool(cfg.get("vqa_training", False))
    if vqa and any(t is not None for t in truth):
        partners = None
        if grounding and cap.uses_image and "partners" in extra.get("grounding", {}):
            partners = np.asarray(extra["grounding"]["partners"])
        extra["vqa"] = evaluate_vqa(cap, feats, examples, truth, partners, boot, int(cfg.get("seed", 0)),
                                    max_new_tokens=16, progress=bool(cfg.get("progress", True)))
    result, _ = evaluation_result(
        label, dataset, generated, examples, truth, out_dir or run / "results",
        config={"run": str(run), "spec": meta.get("spec"), "num_beams": beams, "split": split},
        n_bootstrap=boot, use_meteor=bool(cfg.get("meteor", True)), extra=extra,
    )
    return result


def _grounding(cap, feats, examples: Sequence[CaptionExample], generated: Sequence[str],
               truth: Sequence[set[str] | None], beams: int, n_bootstrap: int, seed: int, out_dir: str | Path,
               label: str, dataset: str, max_new_tokens: int, progress: bool) -> dict:
    """Caption every image from its partner's features; score both against the true labels."""
    from dermino.caption.generate import generate_captions
    from dermino.caption.grounding import grounding_control, swap_partners

    try:
        partners = swap_partners([e.labels for e in examples], seed)
    except ValueError as err:
        return {"skipped": str(err)}
    swapped = generate_captions(cap, feats[torch.as_tensor(partners)], max_new_tokens=max_new_tokens,
                                num_beams=beams, progress=progress)
    labels = [e.labels for e in examples]
    correct = clinical_scores(generated, labels, truth).diagnosis_correct
    correct_swapped = clinical_scores(swapped, labels, truth).diagnosis_correct
    report = grounding_control(correct, correct_swapped, generated, swapped, truth, partners, n_bootstrap, seed)
    name = result_filename(label, dataset, "swapped").removesuffix(".json") + ".csv"
    path = Path(out_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "partner_image", "labels", "partner_labels", "generated_from_partner",
                    "diagnosis_correct_for_image"])
        for e, j, g, c in zip(examples, partners, swapped, correct_swapped, strict=True):
            p = examples[int(j)]
            w.writerow([str(e.image), str(p.image), ";".join(e.labels), ";".join(p.labels), g, int(bool(c))])
    tmp.replace(path)
    report["predictions"] = path.name
    return report


def evaluate_vqa(cap, feats, examples: Sequence[CaptionExample], truth: Sequence[set[str] | None],
                 partners: np.ndarray | None, n_bootstrap: int, seed: int, max_new_tokens: int = 16,
                 batch_size: int = 16, progress: bool = True) -> dict:
    """Ask every annotated image one question per criterion; score the answers (and, with
    ``partners``, the answers from the partner image's features) against its annotation."""
    from dermino.caption.vqa import qa_pairs, vqa_scores
    from dermino.evaluate.stats import paired_bootstrap

    rows, questions = [], []
    for i, t in enumerate(truth):
        if t is None:
            continue
        for q in qa_pairs(t, seed, examples[i].row):
            rows.append(i)
            questions.append(q)
    idx = torch.as_tensor(rows, dtype=torch.long)
    prompts = [q.question for q in questions]

    def answer(features) -> list[str]:
        out: list[str] = []
        for lo in range(0, len(prompts), batch_size):
            sl = slice(lo, lo + batch_size)
            f = features[sl] if cap.uses_image else None
            out += cap.generate(f, batch=len(prompts[sl]), max_new_tokens=max_new_tokens, prompts=prompts[sl])
        return out

    crit = [q.criterion for q in questions]
    present = [q.truth for q in questions]
    answers = answer(feats[idx] if cap.uses_image else None)
    report = {"n_images": len(set(rows)), "n_questions": len(questions),
              "true_image": vqa_scores(crit, present, answers, n_bootstrap, seed),
              "examples": [{"image": str(examples[i].image), "question": q.question, "truth": q.truth, "answer": a}
                           for i, q, a in list(zip(rows, questions, answers, strict=True))[:20]]}
    if partners is not None:
        swapped = answer(feats[torch.as_tensor(partners)[idx]])
        report["swapped_image"] = vqa_scores(crit, present, swapped, n_bootstrap, seed)
        said_true = np.asarray(report["true_image"]["answers_parsed"], dtype=object)
        said_swap = np.asarray(report["swapped_image"]["answers_parsed"], dtype=object)
        crit_arr, truth_arr = np.asarray(crit, dtype=object), np.asarray(present, bool)
        comp = paired_bootstrap(partial(_mean_balanced_on_rows, truth=truth_arr, criteria=crit_arr),
                                np.arange(len(rows)), said_true, said_swap,
                                n_resamples=n_bootstrap, seed=seed)
        report["paired_mean_balanced_accuracy"] = {
            "true_image": comp.a.value, "swapped_image": comp.b.value, "diff": comp.diff.value,
            "ci_low": comp.diff.ci_low, "ci_high": comp.diff.ci_high, "p_value": comp.p_value}
    return report


def _mean_balanced_on_rows(rows: np.ndarray, said: np.ndarray, *, truth: np.ndarray, criteria: np.ndarray) -> float:
    """:func:`~dermino.caption.vqa.mean_balanced_accuracy` of resampled question rows (``said`` is
    already resampled by the paired bootstrap; truth and criteria follow the row indices)."""
    from dermino.caption.vqa import mean_balanced_accuracy

    return mean_balanced_accuracy(truth[rows], said, criteria[rows])
