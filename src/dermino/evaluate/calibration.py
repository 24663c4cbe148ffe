"""Per-group calibration (ECE after temperature scaling) and equalised-odds gaps, with CIs.

Why: AUROC is blind to calibration, and a model can rank well in every skin-type group while
its "80 %" means 80 % in Fitzpatrick I-II and 60 % in V-VI. No public dermatology harness
reports this, so every cell of the leaderboard carries it beside AUROC.

Protocol (all selection on validation, never on test):

1. **Temperature** T is fitted on the validation predictions of the *same* fitted probe by
   minimising the negative log-likelihood of ``softmax(log p / T)`` (Guo et al. 2017;
   ``log p`` are the probe's logits up to a per-row constant, which softmax ignores).
2. **ECE** (top-label, ``n_bins`` equal-width bins) of the temperature-scaled test
   probabilities, per group, with a percentile bootstrap CI over that group's test rows.
3. **Thresholds**: one per scored class, chosen on validation by Youden's J (max TPR - FPR)
   on the temperature-scaled one-vs-rest probability. Binary tasks score the positive class
   (class 1: malignant / melanoma); multi-class tasks score every class one-vs-rest.
4. **Equalised-odds gaps**: for each scored class the largest between-group difference in
   TPR and in FPR at that threshold ("unknown", groups smaller than ``min_group_size`` and, for
   each rate, groups with fewer than ``min_group_size`` of the rows it is estimated from --
   positives of the class for TPR, negatives for FPR -- are left out). The gap's CI bootstraps the *signed* difference between the two groups that
   are highest and lowest on the full test set (resampling test rows of all groups together),
   so "the CI excludes zero" is a meaningful flag; an unsigned max - min is never below zero
   and its interval would exclude zero by construction. The same is done for the ECE gap.

A gap whose CI excludes zero is flagged (``flag: true``); the report shows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Annotated

import numpy as np

from dermino.config import AtLeast1, Range
from dermino.evaluate.fairness import UNKNOWN, ordered_groups
from dermino.evaluate.stats import bootstrap_ci, resample_indices
from dermino.evaluate.task import Predictions

_EPS = 1e-12


@dataclass
class CalibrationConfig:
    n_bins: Annotated[int, AtLeast1] = 15  # equal-width confidence bins for ECE
    min_group_size: Annotated[int, AtLeast1] = 10  # smaller groups (or fewer positives / negatives) are reported, left out of gaps
    alpha: Annotated[float, Range(gt=0, lt=1)] = 0.05  # CI level 1 - alpha


def temperature_scale(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the probe's logits are ``log p`` up to a per-row constant."""
    z = np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)) / temperature
    z -= z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def fit_temperature_logits(logits: np.ndarray, y: np.ndarray) -> float:
    """The T in [0.01, 100] minimising the NLL of ``softmax(logits / T)`` on ``y`` (bounded 1-D search).

    The one temperature fit of the project (Guo et al. 2017): the classifier fits it on its
    validation logits, the evaluation on its probes' validation probabilities (as ``log p``).
    A bounded search on ``log T`` cannot diverge and keeps T positive.
    """
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=int)
    if z.ndim != 2 or len(y) == 0 or len(z) != len(y):
        raise ValueError(f"fit_temperature: logits {tuple(z.shape)} vs {len(y)} labels")
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        s = z / math.exp(log_t)
        s = s - s.max(1, keepdims=True)
        return float((np.log(np.exp(s).sum(1)) - s[rows, y]).mean())

    res = minimize_scalar(nll, bounds=(math.log(1e-2), math.log(1e2)), method="bounded",
                          options={"xatol": 1e-6})
    return float(math.exp(res.x))


def fit_temperature(probs: np.ndarray, y: np.ndarray) -> float:
    """:func:`fit_temperature_logits` on ``log p``, the logits of :func:`temperature_scale`."""
    return fit_temperature_logits(np.log(np.clip(np.asarray(probs, dtype=np.float64), _EPS, 1.0)), y)


def ece(y: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> float:
    """Top-label expected calibration error: ``sum_b |B_b| / N * |acc(B_b) - conf(B_b)|``.

    Bin ``b`` holds confidences in ``(b / n_bins, (b + 1) / n_bins]`` (the first also 0).
    """
    y = np.asarray(y, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        return math.nan
    conf, correct = p.max(1), (p.argmax(1) == y).astype(float)
    idx = np.clip(np.ceil(conf * n_bins).astype(int) - 1, 0, n_bins - 1)
    gap = np.abs(np.bincount(idx, correct - conf, n_bins))  # |sum(acc - conf)| per bin
    return float(gap.sum() / len(y))


def youden_threshold(y_bin: np.ndarray, score: np.ndarray) -> float:
    """The score threshold (predict positive when ``score >= t``) maximising TPR - FPR.

    Candidates are the observed scores; ties go to the higher threshold. NaN when the
    validation rows hold only one class.
    """
    y_bin = np.asarray(y_bin, dtype=bool)
    score = np.asarray(score, dtype=np.float64)
    if y_bin.all() or not y_bin.any():
        return math.nan
    cands = np.unique(score)
    hit = score[None, :] >= cands[:, None]
    tpr = hit[:, y_bin].mean(1)
    fpr = hit[:, ~y_bin].mean(1)
    j = tpr - fpr
    return float(cands[np.flatnonzero(j == j.max())[-1]])


def _rate_matrix(hit: np.ndarray, cond: np.ndarray, groups: np.ndarray, names: Sequence[str],
                 idx: np.ndarray | None = None) -> np.ndarray:
    """Rate of ``hit`` among ``cond`` rows per group: shape (len(names),) or (B, len(names))."""
    if idx is None:
        idx = np.arange(len(hit))[None, :]
        squeeze = True
    else:
        squeeze = False
    h, c, g = hit[idx], cond[idx], groups[idx]
    out = np.empty((idx.shape[0], len(names)))
    for j, name in enumerate(names):
        m = c & (g == name)
        den = m.sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, j] = np.where(den > 0, (h & m).sum(1) / np.maximum(den, 1), np.nan)
    return out[0] if squeeze else out


def _signed_gap(values: np.ndarray, replicates: np.ndarray, names: Sequence[str], alpha: float) -> dict:
    """Largest between-group difference, and the bootstrap CI of that pair's signed difference."""
    finite = np.isfinite(values)
    if finite.sum() < 2:
        return {"value": math.nan, "ci_low": None, "ci_high": None, "pair": [], "flag": False}
    hi = int(np.nanargmax(values))
    lo = int(np.nanargmin(values))
    d = replicates[:, hi] - replicates[:, lo]
    d = d[np.isfinite(d)]
    low, high = (float(q) for q in np.quantile(d, [alpha / 2, 1 - alpha / 2])) if len(d) else (None, None)
    flag = low is not None and (low > 0 or high < 0)
    return {"value": float(values[hi] - values[lo]), "ci_low": low, "ci_high": high,
            "pair": [names[hi], names[lo]], "flag": bool(flag)}


def group_calibration_report(
    preds: Predictions,
    attributes: dict[str, np.ndarray],
    n_classes: int,
    cfg: CalibrationConfig | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Per-attribute ECE per group and equalised-odds gaps (JSON-ready; see the module docstring).

    ``preds`` must carry validation predictions (``val_probs``/``val_y``) of the same fitted
    model; ``attributes[name]`` holds one group label per test prediction.
    """
    cfg = cfg or CalibrationConfig()
    if preds.val_probs is None or preds.val_y is None or len(preds.val_y) == 0:
        raise ValueError("calibration: the predictions carry no validation rows to fit temperature and thresholds on")
    y, val_y = np.asarray(preds.y_true, dtype=int), np.asarray(preds.val_y, dtype=int)
    temperature = fit_temperature(preds.val_probs, val_y)
    probs = temperature_scale(preds.probs, temperature)
    val_probs = temperature_scale(preds.val_probs, temperature)
    classes = [1] if n_classes == 2 else list(range(n_classes))
    thresholds = {c: youden_threshold(val_y == c, val_probs[:, c]) for c in classes}
    overall = {
        "ece_before": asdict(bootstrap_ci(lambda a, b: ece(a, b, cfg.n_bins), y, preds.probs,
                                          n_resamples=n_resamples, seed=seed, alpha=cfg.alpha)),
        "ece_after": asdict(bootstrap_ci(lambda a, b: ece(a, b, cfg.n_bins), y, probs,
                                         n_resamples=n_resamples, seed=seed, alpha=cfg.alpha)),
    }
    report: dict = {
        "temperature": temperature, "fitted_on": "val", "n_val": len(val_y), "n_bins": cfg.n_bins,
        "threshold_rule": "Youden's J (max TPR - FPR) on validation, temperature-scaled one-vs-rest probability",
        "scored_classes": classes, "thresholds": {str(c): t for c, t in thresholds.items()},
        "overall": overall, "attributes": {},
    }
    rng = np.random.default_rng(seed)
    idx = resample_indices(len(y), n_resamples, rng)
    for attr, groups in attributes.items():
        groups = np.asarray(groups).astype(str)
        if len(groups) != len(y):
            raise ValueError(f"calibration: attribute {attr!r} has {len(groups)} values for {len(y)} predictions")
        per_group: dict = {}
        for g in ordered_groups(groups.tolist()):
            rows = groups == g
            per_group[g] = {
                "n": int(rows.sum()), "in_gaps": bool(g != UNKNOWN and rows.sum() >= cfg.min_group_size),
                "ece": asdict(bootstrap_ci(lambda a, b: ece(a, b, cfg.n_bins), y[rows], probs[rows],
                                           n_resamples=n_resamples, seed=seed, alpha=cfg.alpha)),
            }
        names = [g for g, e in per_group.items() if e["in_gaps"]]
        entry: dict = {"groups": per_group, "groups_in_gaps": names}
        if len(names) >= 2:
            ece_vals = np.array([per_group[g]["ece"]["value"] for g in names])
            ece_reps = np.array([[ece(y[r][groups[r] == g], probs[r][groups[r] == g], cfg.n_bins)
                                  if (groups[r] == g).any() else math.nan for g in names] for r in idx])
            entry["ece_gap"] = _signed_gap(ece_vals, ece_reps, names, cfg.alpha)
            eo: dict = {}
            for c in classes:
                t = thresholds[c]
                if not math.isfinite(t):
                    continue
                hit, pos = probs[:, c] >= t, y == c
                cls: dict = {"threshold": t}
                for rate, cond in (("tpr", pos), ("fpr", ~pos)):
                    vals = _rate_matrix(hit, cond, groups, names)
                    reps = _rate_matrix(hit, cond, groups, names, idx)
                    cls[f"{rate}_by_group"] = dict(zip(names, vals.tolist(), strict=True))
                    # a rate is estimated from the group's positives (TPR) or negatives (FPR): a group
                    # with one melanoma has a TPR of 0 or 1 and a degenerate bootstrap, not evidence
                    keep = [j for j, g in enumerate(names) if (cond & (groups == g)).sum() >= cfg.min_group_size]
                    cls[f"{rate}_groups_in_gap"] = [names[j] for j in keep]
                    cls[f"{rate}_gap"] = _signed_gap(vals[keep], reps[:, keep], [names[j] for j in keep], cfg.alpha)
                eo[str(c)] = cls
            entry["equalized_odds"] = eo
        report["attributes"][attr] = entry
    return report


def flagged_gaps(report: dict) -> list[str]:
    """Human-readable lines for every gap whose CI excludes zero."""
    out = []
    for attr, entry in report.get("attributes", {}).items():
        gap = entry.get("ece_gap")
        if gap and gap["flag"]:
            out.append(f"{attr}: ECE gap {gap['value']:.3f} [{gap['ci_low']:.3f}, {gap['ci_high']:.3f}] "
                       f"({gap['pair'][0]} vs {gap['pair'][1]})")
        for c, cls in entry.get("equalized_odds", {}).items():
            for rate in ("tpr", "fpr"):
                g = cls[f"{rate}_gap"]
                if g["flag"]:
                    out.append(f"{attr}: class {c} {rate.upper()} gap {g['value']:.3f} "
                               f"[{g['ci_low']:.3f}, {g['ci_high']:.3f}] ({g['pair'][0]} vs {g['pair'][1]})")
    return out
