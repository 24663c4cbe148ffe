"""What is in a manifest: counts by source, split, label, sex, age band and skin type.

Imbalance and missing demographics decide which metrics mean anything (accuracy on a 58:1
dataset, fairness by skin type with no skin types), so ``data info`` shows them first.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from .manifest import split_labels

AGE_BANDS = ((0, 20, "0-19"), (20, 40, "20-39"), (40, 60, "40-59"), (60, 80, "60-79"), (80, 200, "80+"))


def age_band(value: object) -> str:
    """'47' -> '40-59'; empty / non-numeric -> 'unknown'."""
    try:
        age = float(str(value))
    except ValueError:
        return "unknown"
    if age != age:
        return "unknown"
    return next((name for lo, hi, name in AGE_BANDS if lo <= age < hi), "unknown")


def _counts(values) -> dict[str, int]:
    c = Counter("unknown" if (v is None or str(v).strip() in ("", "nan")) else str(v).strip() for v in values)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def summarize(df: pd.DataFrame) -> dict:
    """Plain-dict summary (JSON-ready) of a manifest."""
    col = lambda c: df[c].tolist() if c in df.columns else [""] * len(df)  # noqa: E731
    labels = Counter(lab for cell in col("labels") for lab in split_labels(cell))
    unlabelled = sum(1 for cell in col("labels") if not split_labels(cell))
    per_source: dict[str, dict] = {}
    for source, sub in df.groupby(df["source"] if "source" in df.columns else pd.Series([""] * len(df))):
        c = Counter(lab for cell in sub["labels"] for lab in split_labels(cell))
        per_source[str(source)] = {
            "images": len(sub),
            "labels": dict(c.most_common()),
            "imbalance_ratio": (max(c.values()) / min(c.values())) if c else None,
        }
    lesions = [v for v in col("lesion_id") if str(v).strip()]
    return {
        "images": len(df),
        "lesions": len(set(lesions)) if lesions else None,
        "by_source": _counts(col("source")),
        "by_split": _counts(col("split")),
        "by_label": dict(labels.most_common()),
        "unlabelled": unlabelled,
        "imbalance_ratio": (max(labels.values()) / min(labels.values())) if labels else None,
        "by_sex": _counts(col("sex")),
        "by_age_band": _counts(age_band(v) if str(v).strip() else "" for v in col("age")),
        "by_fitzpatrick": _counts(str(v).split(".")[0] if str(v).strip() else "" for v in col("fitzpatrick")),
        "by_modality": _counts(col("modality")),
        "with_mask": sum(1 for v in col("mask") if str(v).strip()),
        "per_source": per_source,
    }


def format_summary(s: dict) -> str:
    """Human-readable text of :func:`summarize`."""
    lines = [f"images: {s['images']}" + (f"   lesions: {s['lesions']}" if s["lesions"] else "")
             + f"   with mask: {s['with_mask']}   unlabelled: {s['unlabelled']}"]

    def block(title: str, counts: dict[str, int]) -> None:
        total = sum(counts.values()) or 1
        lines.append(f"{title}:")
        lines.extend(f"  {k:<48} {v:>7}  {100 * v / total:5.1f}%" for k, v in counts.items())

    block("source", s["by_source"])
    block("split", s["by_split"])
    block("label", s["by_label"])
    if s["imbalance_ratio"] is not None:
        lines.append(f"class imbalance (largest / smallest label): {s['imbalance_ratio']:.1f}")
    for src, d in s["per_source"].items():
        if d["imbalance_ratio"] is not None and len(s["per_source"]) > 1:
            lines.append(f"  {src}: imbalance {d['imbalance_ratio']:.1f} over {len(d['labels'])} labels")
    block("sex", s["by_sex"])
    block("age band", s["by_age_band"])
    block("fitzpatrick skin type", s["by_fitzpatrick"])
    block("modality", s["by_modality"])
    return "\n".join(lines)
