"""Classification metrics with explicit handling of classes absent from the test set.

Labels are integers ``0..C-1``; ``probs`` is ``(N, C)`` (a binary task may pass ``(N,)``
scores of the positive class). Macro averages run over ``classes``: by default the classes
*present in y_true*. A class with no test example has no recall and no AUROC; averaging a
made-up 0 or 1 for it would move the number arbitrarily, so it is reported as NaN in the
per-class values and listed in ``absent`` instead. Pass ``classes`` explicitly (e.g. the
classes present in the full test set) to make a bootstrap resample that lost one of them
undefined (NaN, so the bootstrap skips it) rather than silently averaging fewer classes.

AUROC is the Mann-Whitney statistic on average ranks (ties count one half), which is what
scikit-learn computes, without its per-call overhead in bootstrap loops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import rankdata

from dermino.evaluate.stats import bootstrap_ci
from dermino.results import Metric


def _as_probs(probs: np.ndarray) -> np.ndarray:
    p = np.asarray(probs, dtype=float)
    if p.ndim == 1:  # binary scores of class 1
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N,) or (N, C), got shape {p.shape}")
    return p


def binary_auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """AUROC of ``scores`` for ``y_true`` in {0, 1}; NaN when only one class is present."""
    y = np.asarray(y_true).astype(bool)
    s = np.asarray(scores, dtype=float)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _classes(y: np.ndarray, classes: Sequence[int] | None) -> np.ndarray:
    return np.unique(y) if classes is None else np.asarray(list(classes), dtype=int)


def per_class_auroc(y_true: np.ndarray, probs: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """One-vs-rest AUROC for every class column; NaN for classes absent from ``y_true``."""
    y = np.asarray(y_true, dtype=int)
    p = _as_probs(probs)
    c = n_classes or p.shape[1]
    return np.array([binary_auroc(y == k, p[:, k]) if k < p.shape[1] else math.nan for k in range(c)])


def macro_auroc(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[int] | None = None) -> float:
    """Mean one-vs-rest AUROC over ``classes``; the binary case is the AUROC of class 1.

    NaN (undefined) if any requested class has no positive or no negative example.
    """
    y = np.asarray(y_true, dtype=int)
    p = _as_probs(probs)
    if p.shape[1] == 2:
        return binary_auroc(y == 1, p[:, 1])
    cls = _classes(y, classes)
    values = [binary_auroc(y == k, p[:, k]) for k in cls]
    if not values or any(math.isnan(v) for v in values):
        return math.nan
    return float(np.mean(values))


def _confusion(y: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    return np.bincount(y * n + pred, minlength=n * n).reshape(n, n)


def per_class_f1(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """F1 per class; NaN for classes absent from y_true (F1 is 0 if present but never hit)."""
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    cm = _confusion(y, p, n_classes)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    denom = support + predicted
    f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return np.where(support > 0, f1, math.nan)


def per_class_recall(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    cm = _confusion(y, p, n_classes)
    support = cm.sum(axis=1)
    return np.where(support > 0, np.diag(cm) / np.maximum(support, 1), math.nan)


def _macro(values: np.ndarray, y: np.ndarray, classes: Sequence[int] | None) -> float:
    cls = _classes(y, classes)
    if len(cls) == 0:
        return math.nan
    sel = values[cls]
    return math.nan if np.isnan(sel).any() else float(sel.mean())


def _n_classes(y: np.ndarray, p: np.ndarray, classes: Sequence[int] | None) -> int:
    top = [int(y.max(initial=-1)), int(p.max(initial=-1))] + [int(c) for c in (classes or [])]
    return max(top) + 1


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int] | None = None) -> float:
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    return _macro(per_class_f1(y, p, _n_classes(y, p, classes)), y, classes)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[int] | None = None) -> float:
    """Mean recall over classes (present ones by default)."""
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    return _macro(per_class_recall(y, p, _n_classes(y, p, classes)), y, classes)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    y, p = np.asarray(y_true), np.asarray(y_pred)
    return float((y == p).mean()) if len(y) else math.nan


def quadratic_weighted_kappa(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int | None = None) -> float:
    """Cohen's kappa with quadratic weights, for ordinal grades (e.g. acne severity 0-3).

    Disagreeing by two grades costs four times disagreeing by one, which accuracy ignores.
    Equals ``sklearn.metrics.cohen_kappa_score(y, p, weights="quadratic")``; NaN when the
    expected disagreement is zero (one grade only).
    """
    y, p = np.asarray(y_true, dtype=int), np.asarray(y_pred, dtype=int)
    if len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} items, y_pred {len(p)}")
    if not len(y):
        return math.nan
    n = int(n_classes or max(y.max(), p.max()) + 1)
    observed = _confusion(y, p, n).astype(float)
    expected = np.outer(observed.sum(1), observed.sum(0)) / observed.sum()
    grades = np.arange(n)
    weights = (grades[:, None] - grades[None, :]) ** 2
    denom = (weights * expected).sum()
    return float(1.0 - (weights * observed).sum() / denom) if denom > 0 else math.nan


def quadratic_weighted_kappa_ci(y_true: np.ndarray, y_pred: np.ndarray, n_resamples: int = 1000,
                                seed: int = 0, alpha: float = 0.05) -> Metric:
    """QWK with a percentile bootstrap CI; the grade count is fixed from the full data."""
    n = int(max(np.max(y_true), np.max(y_pred)) + 1) if len(y_true) else 0
    return bootstrap_ci(lambda a, b: quadratic_weighted_kappa(a, b, n), np.asarray(y_true), np.asarray(y_pred),
                        n_resamples=n_resamples, seed=seed, alpha=alpha)


#: name -> fn(y_true, probs, pred, classes) used by protocols, bootstrap and fairness
MetricFn = Callable[[np.ndarray, np.ndarray, np.ndarray, Sequence[int] | None], float]
CLASSIFICATION_METRICS: dict[str, MetricFn] = {
    "auroc": lambda y, pr, pd, c: macro_auroc(y, pr, c),
    "f1": lambda y, pr, pd, c: macro_f1(y, pd, c),
    "balanced_accuracy": lambda y, pr, pd, c: balanced_accuracy(y, pd, c),
    "accuracy": lambda y, pr, pd, c: accuracy(y, pd),
}


#: metrics of ordinal grading tasks (severity 0..K-1), same signature as above
ORDINAL_METRICS: dict[str, MetricFn] = {
    "qwk": lambda y, pr, pd, c: quadratic_weighted_kappa(y, pd, pr.shape[1] if np.ndim(pr) == 2 else None),
}


def classification_summary(
    y_true: np.ndarray, probs: np.ndarray, pred: np.ndarray, class_names: Sequence[str]
) -> dict:
    """All metrics plus per-class values and the list of classes absent from the test set."""
    y = np.asarray(y_true, dtype=int)
    n = len(class_names)
    present = [int(k) for k in np.unique(y)]
    out: dict = {name: fn(y, probs, pred, present) for name, fn in CLASSIFICATION_METRICS.items()}
    auc = per_class_auroc(y, probs, n)
    f1 = per_class_f1(y, pred, n)
    rec = per_class_recall(y, pred, n)
    out["per_class"] = {
        name: {
            "support": int((y == k).sum()),
            "auroc": None if math.isnan(auc[k]) else float(auc[k]),
            "f1": None if math.isnan(f1[k]) else float(f1[k]),
            "recall": None if math.isnan(rec[k]) else float(rec[k]),
        }
        for k, name in enumerate(class_names)
    }
    out["absent"] = [name for k, name in enumerate(class_names) if k not in present]
    return out
