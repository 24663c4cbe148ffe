"""The captioning section of a report: metrics table and example images with their captions.

Reads only files: the ``*__captioning.json`` results written by ``dermino caption evaluate``
and the ``predictions.csv`` each names. Example thumbnails are re-encoded small JPEGs so the
self-contained HTML stays light.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd
from PIL import Image

from dermino.report.html import Figure, Section, format_metric, render_html, results_table
from dermino.results import Result, read_results

TASK = "captioning"
METRICS = ["bleu1", "bleu2", "bleu4", "meteor", "rougeL_coco", "cider", "rouge1", "rouge2", "sacrebleu",
           "diagnosis_accuracy", "criteria_precision_macro", "criteria_recall_macro"]


def captioning_results(folder: str | Path) -> list[Result]:
    return [r for r in read_results(folder) if r.task == TASK]


def _thumbnail(src: Path, dst: Path, side: int = 160) -> Path | None:
    try:
        with Image.open(src) as im:
            im = im.convert("RGB")
            im.thumbnail((side, side))
            dst.parent.mkdir(parents=True, exist_ok=True)
            im.save(dst, quality=85)
    except OSError:
        return None
    return dst


def captioning_section(folder: str | Path, n_examples: int = 6, thumbs_dir: str | Path | None = None) -> Section:
    """Metrics table (value [95 % CI]) per captioner and dataset, notes, and example captions."""
    folder = Path(folder)
    results = captioning_results(folder)
    if not results:
        raise ValueError(f"no captioning results (*__captioning.json) in {folder}")
    present = [m for m in METRICS if any(m in r.metrics for r in results)]
    section = Section("Captioning", tables=[("Caption metrics (95 % bootstrap CI)", results_table(results, present))])
    section.paragraphs.append(
        "BLEU, METEOR, ROUGE-L and CIDEr-D from pycocoevalcap, ROUGE-1/2 from rouge-score, corpus BLEU from "
        "sacrebleu (0-100). Diagnosis accuracy: share of generated captions that name the true diagnosis and no "
        "other. Criteria precision/recall: macro over PH2 dermoscopic criteria stated as present in the text."
    )
    grounding = grounding_table(results)
    if not grounding.empty:
        section.tables.append(("Grounding control: captions from the true image vs from a different-diagnosis "
                               "image's features (paired bootstrap, 95 % CI)", grounding))
        section.paragraphs.append(
            "Each held-out image is captioned again from the features of a seeded partner image with a different "
            "diagnosis, and both captions are scored against the true image's labels. A captioner that reads its "
            "image scores higher with the true features (difference > 0, CI above zero); one that writes a "
            "template scores the same. Compare with the language model alone (no image) in the table above."
        )
    vqa = vqa_table(results)
    if not vqa.empty:
        section.tables.append(("Criteria questions (PH2): balanced accuracy per criterion [95 % CI], true image "
                               "vs swapped image", vqa))
        section.paragraphs.append(
            "One yes/no question per dermoscopic criterion for every PH2-annotated held-out image; answers are "
            "read as yes / no / unknown (negation handled; unknown counts as wrong). Balanced accuracy: mean of "
            "the yes- and no-recall, so answering 'no' to a rare criterion scores 0.5."
        )
    skipped = sorted({r.backbone for r in results if r.extra.get("meteor_skipped")})
    if skipped:
        section.paragraphs.append(f"METEOR was skipped (no Java runtime) for: {', '.join(skipped)}.")
    rows = []
    for r in results:
        for name, c in (r.extra.get("criteria") or {}).items():
            p, rec = c.get("precision"), c.get("recall")
            rows.append({"backbone": r.backbone, "criterion": name,
                         "precision": "–" if p is None or math.isnan(p) else f"{p:.2f}",
                         "recall": "–" if rec is None or math.isnan(rec) else f"{rec:.2f}",
                         "support": c.get("support")})
    if rows:
        wide = pd.DataFrame(rows)
        section.tables.append(("Stated criteria vs PH2 annotation (precision / recall)", wide))
    thumbs = Path(thumbs_dir) if thumbs_dir else folder / "thumbs"
    for r in sorted(results, key=lambda r: r.backbone):
        pred = folder / str(r.extra.get("predictions", ""))
        if not pred.is_file():
            continue
        df = pd.read_csv(pred, dtype=str, keep_default_na=False).head(n_examples)
        for i, row in enumerate(df.to_dict("records")):
            src = Path(row["image"])
            if not src.is_file():
                continue
            thumb = _thumbnail(src, thumbs / f"{r.backbone}_{i}.jpg")
            if thumb is None:
                continue
            ok = "correct" if row.get("diagnosis_correct") == "1" else "wrong"
            section.figures.append(Figure(thumb, f"[{r.backbone}] true: {row['reference']} | generated ({ok} "
                                                 f"diagnosis): {row['generated']}"))
    return section


def grounding_table(results: list[Result]) -> pd.DataFrame:
    """One row per captioner x dataset x score of the grounding control (empty when none ran)."""
    rows = []
    for r in sorted(results, key=lambda r: (r.backbone, r.dataset)):
        g = r.extra.get("grounding") or {}
        if "skipped" in g:
            rows.append({"captioner": r.backbone, "dataset": r.dataset, "score": "–", "true image": "–",
                         "swapped image": "–", "difference [95 % CI]": f"skipped: {g['skipped']}", "p": "–"})
        for key, label in (("diagnosis_accuracy", "diagnosis accuracy"), ("criteria_f1", "criteria F1 (micro)")):
            c = g.get(key)
            if not c:
                continue
            ci = f" [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]" if c.get("ci_low") is not None else ""
            flag = " *" if c.get("ci_low") is not None and c["ci_low"] > 0 else ""
            rows.append({"captioner": r.backbone, "dataset": r.dataset, "score": label,
                         "true image": f"{c['true_image']:.3f}", "swapped image": f"{c['swapped_image']:.3f}",
                         "difference [95 % CI]": f"{c['diff']:+.3f}{ci}{flag}", "p": f"{c['p_value']:.3g}"})
    return pd.DataFrame(rows)


def vqa_table(results: list[Result]) -> pd.DataFrame:
    """One row per captioner x criterion (and the mean) of the criteria questions (empty when none ran)."""
    def cell(m: dict | None) -> str:
        if not m or m.get("value") is None or (isinstance(m["value"], float) and math.isnan(m["value"])):
            return "–"
        ci = f" [{m['ci_low']:.2f}, {m['ci_high']:.2f}]" if m.get("ci_low") is not None else ""
        return f"{m['value']:.2f}{ci}"

    rows = []
    for r in sorted(results, key=lambda r: (r.backbone, r.dataset)):
        v = r.extra.get("vqa") or {}
        if not v:
            continue
        true, swapped = v.get("true_image", {}), v.get("swapped_image", {})
        for crit, t in (true.get("per_criterion") or {}).items():
            s = (swapped.get("per_criterion") or {}).get(crit, {})
            rows.append({"captioner": r.backbone, "criterion": crit, "n": t["n"], "present": t["n_present"],
                         "true image": cell(t["balanced_accuracy"]),
                         "swapped image": cell(s.get("balanced_accuracy")),
                         "macro F1": cell(t["macro_f1"]), "unknown": f"{t['unknown']:.0%}"})
        paired = v.get("paired_mean_balanced_accuracy")
        if paired:
            ci = f" [{paired['ci_low']:+.3f}, {paired['ci_high']:+.3f}]" if paired.get("ci_low") is not None else ""
            rows.append({"captioner": r.backbone, "criterion": "mean (paired difference)", "n": v["n_questions"],
                         "present": "", "true image": f"{paired['true_image']:.3f}",
                         "swapped image": f"{paired['swapped_image']:.3f}",
                         "macro F1": f"diff {paired['diff']:+.3f}{ci}, p={paired['p_value']:.3g}", "unknown": ""})
    return pd.DataFrame(rows)


def render_captioning_html(folder: str | Path, out: str | Path | None = None, title: str = "Captioning") -> Path:
    """A self-contained HTML page of the captioning results in ``folder``."""
    folder = Path(folder)
    section = captioning_section(folder)
    out = Path(out) if out else folder / "captioning.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(title, [section], subtitle=html.unescape(f"results from {folder}")), encoding="utf-8")
    tmp.replace(out)
    return out


__all__ = ["captioning_section", "render_captioning_html", "format_metric"]
