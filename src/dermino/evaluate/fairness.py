"""Per-group performance and gaps: sex, age band, Fitzpatrick type, estimated skin tone.

For every attribute the test rows are grouped, every metric gets a bootstrap CI per group,
and three summaries are reported:

* ``gap``: largest minus smallest group value of each metric;
* ``demographic_parity_difference``: max - min over groups of the rate of predicting a class;
* ``equalized_odds_difference``: max over (TPR gap, FPR gap) between groups for a class.

Multi-class tasks use one-vs-rest per class and the macro mean over classes (a class whose
rate is undefined in a group, e.g. no positives there, is skipped for that group); binary
tasks use the positive class only, which is the usual (fairlearn) definition. Unknown
attribute values and groups smaller than ``min_group_size`` are reported but left out of
the gaps, since a 3-image group's AUROC gap is noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import pandas as pd

from dermino.evaluate.metrics import CLASSIFICATION_METRICS
from dermino.evaluate.skin_tone import ITA_CATEGORIES
from dermino.evaluate.stats import bootstrap_ci
from dermino.evaluate.task import Predictions

AGE_BANDS = [(0, 30, "<30"), (30, 45, "30-44"), (45, 60, "45-59"), (60, 75, "60-74"), (75, 200, "75+")]
UNKNOWN = "unknown"
#: The paper's Fitzpatrick groups (DDI publishes only these): reported beside single types.
FITZPATRICK_GROUPS = {"1": "I-II", "2": "I-II", "3": "III-IV", "4": "III-IV", "5": "V-VI", "6": "V-VI"}
_GROUP_ALIASES = {"12": "I-II", "i-ii": "I-II", "34": "III-IV", "iii-iv": "III-IV", "56": "V-VI", "v-vi": "V-VI"}


def fitzpatrick_group(value: object) -> str:
    """'1'/'2.0' -> 'I-II', '3' -> 'III-IV', '6' -> 'V-VI'; DDI's '12'/'34'/'56' and 'I-II' as is."""
    s = _clean(value)
    if s == UNKNOWN:
        return UNKNOWN
    s = s.split(".")[0] if s.replace(".", "", 1).isdigit() else s
    return FITZPATRICK_GROUPS.get(s) or _GROUP_ALIASES.get(s, UNKNOWN)


def age_band(value: object) -> str:
    try:
        age = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return UNKNOWN
    if math.isnan(age):
        return UNKNOWN
    for lo, hi, name in AGE_BANDS:
        if lo <= age < hi:
            return name
    return UNKNOWN


def _group_sort_key(group: str) -> tuple[int, float, str]:
    """Natural order for tables and plots: age bands by age, ITA tones light to dark,
    Fitzpatrick types by number, anything else alphabetically; "unknown" last."""
    bands = [name for _, _, name in AGE_BANDS]
    if group == UNKNOWN:
        return (2, 0.0, group)
    if group in bands:
        return (0, float(bands.index(group)), group)
    if group in ("I-II", "III-IV", "V-VI"):
        return (0, float(("I-II", "III-IV", "V-VI").index(group)), group)
    if group in ITA_CATEGORIES:
        return (0, float(ITA_CATEGORIES.index(group)), group)
    try:
        return (0, float(group), group)
    except ValueError:
        return (1, 0.0, group)


def ordered_groups(groups: Sequence[str]) -> list[str]:
    return sorted(set(groups), key=_group_sort_key)


def _clean(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return UNKNOWN
    s = str(value).strip().lower()
    return UNKNOWN if s in ("", "nan", "none", "unknown", "-1") else s


def group_columns(df: pd.DataFrame, attributes: Sequence[str]) -> dict[str, np.ndarray]:
    """Group label per row for each requested attribute that the manifest actually has.

    ``age`` is banded; ``fitzpatrick`` is kept as its type and also grouped as the paper does
    (``fitzpatrick_group``: I-II / III-IV / V-VI, read from a ``fitzpatrick_group`` column when
    a dataset publishes only groups, as DDI does); ``skin_tone`` must already be a column (see
    :func:`dermino.evaluate.skin_tone.estimate_skin_tone`). Attributes with no known value at
    all are dropped.
    """
    out: dict[str, np.ndarray] = {}
    attributes = list(attributes)
    if "fitzpatrick" in attributes and "fitzpatrick_group" not in attributes:
        attributes.insert(attributes.index("fitzpatrick") + 1, "fitzpatrick_group")
    for attr in attributes:
        if attr == "fitzpatrick_group":
            cols = [c for c in ("fitzpatrick_group", "fitzpatrick") if c in df.columns]
            if cols:
                values = np.array([next((g for g in (fitzpatrick_group(r[c]) for c in cols) if g != UNKNOWN),
                                        UNKNOWN) for r in df[cols].to_dict("records")])
                if (values != UNKNOWN).any():
                    out[attr] = values
            continue
        if attr not in df.columns:
            continue
        if attr == "age":
            values = np.array([age_band(v) for v in df[attr]])
        elif attr == "fitzpatrick":
            values = np.array([_clean(str(v).split(".")[0]) if _clean(v) != UNKNOWN else UNKNOWN for v in df[attr]])
        else:
            values = np.array([_clean(v) for v in df[attr]])
        if (values != UNKNOWN).any():
            out[attr] = values
    return out


def _rates(pred: np.ndarray, y: np.ndarray, cls: int) -> tuple[float, float, float]:
    """(selection rate, TPR, FPR) of one-vs-rest class ``cls``; NaN where undefined."""
    hit = pred == cls
    pos = y == cls
    sel = float(hit.mean()) if len(hit) else math.nan
    tpr = float(hit[pos].mean()) if pos.any() else math.nan
    fpr = float(hit[~pos].mean()) if (~pos).any() else math.nan
    return sel, tpr, fpr


def _spread(values: Sequence[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return max(v) - min(v) if len(v) >= 2 else math.nan


def parity_differences(
    y: np.ndarray, pred: np.ndarray, groups: np.ndarray, n_classes: int
) -> tuple[float, float]:
    """(demographic-parity difference, equalised-odds difference), one-vs-rest macro."""
    names = [g for g in np.unique(groups)]
    classes = [1] if n_classes == 2 else list(range(n_classes))
    dp, eo = [], []
    for c in classes:
        rates = [_rates(pred[groups == g], y[groups == g], c) for g in names]
        dp_c = _spread([r[0] for r in rates])
        tpr_gap, fpr_gap = _spread([r[1] for r in rates]), _spread([r[2] for r in rates])
        eo_c = max((x for x in (tpr_gap, fpr_gap) if math.isfinite(x)), default=math.nan)
        if math.isfinite(dp_c):
            dp.append(dp_c)
        if math.isfinite(eo_c):
            eo.append(eo_c)
    return (float(np.mean(dp)) if dp else math.nan, float(np.mean(eo)) if eo else math.nan)


def fairness_report(
    preds: Predictions,
    attributes: dict[str, np.ndarray],
    n_classes: int,
    metrics: Sequence[str] = ("auroc", "balanced_accuracy", "f1", "accuracy"),
    n_resamples: int = 1000,
    seed: int = 0,
    min_group_size: int = 10,
) -> dict:
    """Per-attribute, per-group metrics with CIs, gaps and parity differences (JSON-ready).

    ``attributes[name]`` holds one group label per *test prediction* (aligned with
    ``preds.y_true``).
    """
    y, probs, pred = preds.y_true, preds.probs, preds.pred
    report: dict = {}
    for attr, groups in attributes.items():
        groups = np.asarray(groups).astype(str)
        if len(groups) != len(y):
            raise ValueError(f"fairness: attribute {attr!r} has {len(groups)} values for {len(y)} predictions")
        per_group: dict = {}
        for g in ordered_groups(groups.tolist()):
            rows = groups == g
            present = [int(k) for k in np.unique(y[rows])]
            entry: dict = {"n": int(rows.sum()), "in_gaps": bool(g != UNKNOWN and rows.sum() >= min_group_size)}
            for m in metrics:
                fn = CLASSIFICATION_METRICS[m]
                metric = bootstrap_ci(
                    lambda a, b, c, fn=fn, present=present: fn(a, b, c, present),
                    y[rows], probs[rows], pred[rows], n_resamples=n_resamples, seed=seed,
                )
                entry[m] = asdict(metric)
            per_group[g] = entry
        eligible = [g for g, e in per_group.items() if e["in_gaps"]]
        gaps = {
            m: _spread([per_group[g][m]["value"] for g in eligible]) for m in metrics
        }
        keep = np.isin(groups, eligible)
        dp, eo = parity_differences(y[keep], pred[keep], groups[keep], n_classes)
        report[attr] = {
            "groups": per_group,
            "gap": gaps,
            "largest_gap": max(gaps.items(), key=lambda kv: kv[1] if math.isfinite(kv[1]) else -1)
            if gaps else None,
            "demographic_parity_difference": dp,
            "equalized_odds_difference": eo,
            "groups_in_gaps": eligible,
        }
    return report
