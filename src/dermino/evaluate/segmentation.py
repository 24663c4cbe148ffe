"""Dice and Jaccard of binary lesion masks, per image and pooled, with bootstrap CIs over images.

Headline numbers are the LESION class: the original DermINO code averaged Dice over both
classes, which counts the (easy, large) background and inflates the score; that average is
still reported, under names that say so (``*_mean_classes``), and the background alone as
``*_background``.

Every number comes from four pixel counts per image (lesion true/false positives, false
negatives, true negatives), so the background class is the same counts with roles swapped
and a bootstrap resample only needs to re-sum counts.

Two variants:

* per-image (``dice``, ``jaccard``): the score of each image, averaged over images. Every
  image weighs the same, whatever the lesion size.
* pooled (``dice_pooled``, ``jaccard_pooled``): all pixels of the dataset counted together,
  so large lesions weigh more.

Empty masks (no lesion pixel in the ground truth AND in the prediction): the score is
undefined (0/0). Convention ``empty="one"`` (default) scores such an image 1.0, since
predicting "no lesion" was right; ``empty="skip"`` leaves it out of the per-image mean. A
prediction with lesion pixels on an empty ground truth (or the reverse) scores 0 either way.
"""

from __future__ import annotations

import math

import numpy as np

from dermino.results import Metric

EMPTY_CONVENTIONS = ("one", "skip")


def counts(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``[tp, fp, fn, tn]`` of the lesion class for one image (bool/0-1 arrays of the same shape)."""
    p = np.asarray(pred).astype(bool)
    g = np.asarray(target).astype(bool)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and mask {g.shape} differ in shape")
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    return np.array([tp, fp, fn, p.size - tp - fp - fn], dtype=np.int64)


def _swap_to_background(c: np.ndarray) -> np.ndarray:
    """Counts of the background class: its tp is the lesion tn, its fp the lesion fn, ..."""
    return c[..., [3, 2, 1, 0]]


def _scores(c: np.ndarray, kind: str, empty: str) -> np.ndarray:
    if empty not in EMPTY_CONVENTIONS:
        raise ValueError(f"empty must be one of {EMPTY_CONVENTIONS}, got {empty!r}")
    c = np.atleast_2d(np.asarray(c, dtype=np.float64))
    tp, fp, fn = c[:, 0], c[:, 1], c[:, 2]
    denom = 2 * tp + fp + fn if kind == "dice" else tp + fp + fn
    num = 2 * tp if kind == "dice" else tp
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / denom
    out[denom == 0] = 1.0 if empty == "one" else math.nan
    return out


def per_image(c: np.ndarray, kind: str = "dice", cls: str = "lesion", empty: str = "one") -> np.ndarray:
    """Score of every image from ``(N, 4)`` counts; ``kind`` dice|jaccard, ``cls`` lesion|background|mean."""
    c = np.atleast_2d(c)
    if cls == "lesion":
        return _scores(c, kind, empty)
    if cls == "background":
        return _scores(_swap_to_background(c), kind, empty)
    if cls == "mean":
        return (_scores(c, kind, empty) + _scores(_swap_to_background(c), kind, empty)) / 2
    raise ValueError(f"cls must be lesion, background or mean, got {cls!r}")


def mean_per_image(c: np.ndarray, kind: str = "dice", cls: str = "lesion", empty: str = "one") -> float:
    """Mean over images; NaN if every image was skipped (``empty='skip'`` and nothing to score)."""
    s = per_image(c, kind, cls, empty)
    s = s[~np.isnan(s)]
    return float(s.mean()) if s.size else math.nan


def pooled(c: np.ndarray, kind: str = "dice", cls: str = "lesion") -> float:
    """Score of all pixels counted together (1.0 if there is no lesion pixel anywhere, predicted or true)."""
    total = np.atleast_2d(c).sum(axis=0)
    if cls == "background":
        total = _swap_to_background(total)
    return float(_scores(total, kind, "one")[0])


def whole_image_baseline(c: np.ndarray, kind: str = "dice") -> float:
    """Per-image score of the trivial prediction "every pixel is lesion" (from the same counts)."""
    c = np.atleast_2d(c)
    lesion = c[:, 0] + c[:, 2]
    n = c.sum(axis=1)
    trivial = np.stack([lesion, n - lesion, np.zeros_like(n), np.zeros_like(n)], axis=1)
    return mean_per_image(trivial, kind)


def summarize(
    c: np.ndarray, n_bootstrap: int = 1000, seed: int = 0, empty: str = "one", alpha: float = 0.05
) -> dict[str, Metric]:
    """All reported metrics with percentile-bootstrap CIs over images (rows of ``c``)."""
    from dermino.evaluate.stats import bootstrap_ci

    c = np.atleast_2d(np.asarray(c, dtype=np.int64))
    fns = {
        "dice": lambda x: mean_per_image(x, "dice", "lesion", empty),
        "jaccard": lambda x: mean_per_image(x, "jaccard", "lesion", empty),
        "dice_pooled": lambda x: pooled(x, "dice"),
        "jaccard_pooled": lambda x: pooled(x, "jaccard"),
        "dice_background": lambda x: mean_per_image(x, "dice", "background", empty),
        "jaccard_background": lambda x: mean_per_image(x, "jaccard", "background", empty),
        "dice_mean_classes": lambda x: mean_per_image(x, "dice", "mean", empty),
        "jaccard_mean_classes": lambda x: mean_per_image(x, "jaccard", "mean", empty),
        "pixel_accuracy": lambda x: float((x[:, 0].sum() + x[:, 3].sum()) / max(x.sum(), 1)),
    }
    out = {}
    for name, fn in fns.items():
        if n_bootstrap > 0:
            out[name] = bootstrap_ci(fn, c, n_resamples=n_bootstrap, seed=seed, alpha=alpha)
        else:
            out[name] = Metric(value=fn(c), n=len(c))
    return out
