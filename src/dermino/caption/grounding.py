"""The grounding control: does a caption come from its image, or from the template?

A captioner that writes the majority template for every image can score well on BLEU and even
on diagnosis accuracy (when one diagnosis dominates). The control that exposes it: caption each
held-out image a second time from the features of *another* image with a different diagnosis
(a fixed, seeded pairing), and score the swapped-image caption against the *true* image's
labels. A captioner that reads its input does better with the true features than with the
swapped ones; one that ignores them scores the same. The paired difference (true minus swapped,
on the same images) gets a bootstrap CI and p-value.

Why a pairing and not a permutation: when one diagnosis holds more than half of the images (the
nevi of HAM10000), no permutation can give every image a partner of another diagnosis. Each image
draws its partner, seeded, among the images whose diagnoses share nothing with its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from dermino.caption.clinical import CRITERIA, stated_criteria
from dermino.evaluate.stats import paired_bootstrap


def swap_partners(labels: Sequence[Sequence[str]], seed: int = 0) -> np.ndarray:
    """``partner[i]``: an image whose diagnoses share none of image ``i``'s (seeded, deterministic).

    Raises when an image has no such partner (every image carries the same diagnosis).
    """
    sets = [frozenset(str(x).strip().lower() for x in ls if str(x).strip()) for ls in labels]
    rng = np.random.default_rng(seed)
    partner = np.empty(len(sets), dtype=np.int64)
    by_set: dict[frozenset, np.ndarray] = {}
    for i, s in enumerate(sets):
        if s not in by_set:
            by_set[s] = np.array([j for j, t in enumerate(sets) if not (s & t) and t], dtype=np.int64)
        candidates = by_set[s]
        if not s or len(candidates) == 0:
            raise ValueError(f"grounding control: image {i} (diagnosis {sorted(s) or 'none'}) has no image of "
                             "a different diagnosis to be swapped with")
        partner[i] = candidates[rng.integers(len(candidates))]
    return partner


def _mean(_: np.ndarray, values: np.ndarray) -> float:
    return float(np.mean(values))


def _micro_f1(truth: np.ndarray, stated: np.ndarray) -> float:
    """``2 TP / (2 TP + FP + FN)`` over every (image, criterion) cell."""
    tp = float((truth & stated).sum())
    den = 2 * tp + float((~truth & stated).sum()) + float((truth & ~stated).sum())
    return 2 * tp / den if den else math.nan


def _comparison(metric_fn, y: np.ndarray, a: np.ndarray, b: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    comp = paired_bootstrap(metric_fn, y, a, b, n_resamples=n_bootstrap, seed=seed)
    return {"true_image": comp.a.value, "swapped_image": comp.b.value, "diff": comp.diff.value,
            "ci_low": comp.diff.ci_low, "ci_high": comp.diff.ci_high, "p_value": comp.p_value, "n": comp.diff.n}


def grounding_control(
    correct_true: np.ndarray,
    correct_swapped: np.ndarray,
    generated_true: Sequence[str],
    generated_swapped: Sequence[str],
    criteria_truth: Sequence[set[str] | None],
    partners: np.ndarray,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict:
    """Paired true-image vs swapped-image scores: diagnosis accuracy and (on annotated rows) criteria F1.

    Both are scored against the true image's labels; ``correct_*`` are per-image booleans.
    """
    a = np.asarray(correct_true, dtype=float)
    b = np.asarray(correct_swapped, dtype=float)
    out = {
        "method": "each image also captioned from the features of a seeded partner image of a different "
                  "diagnosis; paired bootstrap over images (true minus swapped)",
        "seed": seed,
        "diagnosis_accuracy": _comparison(_mean, np.zeros(len(a)), a, b, n_bootstrap, seed),
    }
    rows = [i for i, t in enumerate(criteria_truth) if t is not None]
    if rows:
        names = list(CRITERIA)
        truth = np.array([[c in criteria_truth[i] for c in names] for i in rows])
        st = np.array([[c in stated_criteria(generated_true[i]) for c in names] for i in rows])
        ss = np.array([[c in stated_criteria(generated_swapped[i]) for c in names] for i in rows])
        out["criteria_f1"] = _comparison(_micro_f1, truth, st, ss, n_bootstrap, seed)
    out["grounded"] = bool(out["diagnosis_accuracy"]["ci_low"] is not None and out["diagnosis_accuracy"]["ci_low"] > 0)
    out["partners"] = [int(p) for p in partners]
    return out
