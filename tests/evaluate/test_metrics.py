"""Metric functions agree with scikit-learn; absent classes are handled explicitly."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from dermino.evaluate.metrics import (
    accuracy,
    balanced_accuracy,
    binary_auroc,
    classification_summary,
    macro_auroc,
    macro_f1,
    per_class_auroc,
)


def _random_case(seed: int, n: int = 80, c: int = 4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    logits[: n // 4] = np.round(logits[: n // 4])  # some ties
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    return y, probs, probs.argmax(1)


@pytest.mark.parametrize("seed", range(6))
def test_agree_with_sklearn_multiclass(seed):
    y, probs, pred = _random_case(seed)
    assert macro_auroc(y, probs) == pytest.approx(
        skm.roc_auc_score(y, probs, multi_class="ovr", average="macro")
    )
    assert macro_f1(y, pred) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert balanced_accuracy(y, pred) == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert accuracy(y, pred) == pytest.approx(skm.accuracy_score(y, pred))


@pytest.mark.parametrize("seed", range(4))
def test_agree_with_sklearn_binary(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=50)
    s = np.round(rng.normal(size=50) + y, 1)  # ties on purpose
    assert binary_auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s))
    assert macro_auroc(y, s) == pytest.approx(skm.roc_auc_score(y, s))  # (N,) scores
    probs = np.stack([1 - s, s], 1)
    assert macro_auroc(y, probs) == pytest.approx(skm.roc_auc_score(y, s))
    pred = (s > 0.5).astype(int)
    assert macro_f1(y, pred) == pytest.approx(skm.f1_score(y, pred, average="macro"))


def test_golden_auroc():
    # positives score 0.9, 0.4; negatives 0.5, 0.1 -> pairs won: (0.9>0.5, 0.9>0.1, 0.4>0.1) = 3/4
    assert binary_auroc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == pytest.approx(0.75)


def test_absent_class_is_explicit():
    # 4 classes, class 3 never in the test set (but predicted once)
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = np.array([0, 3, 1, 1, 2, 0])
    probs = np.eye(4)[pred] * 0.7 + 0.075
    names = ["a", "b", "c", "d"]
    s = classification_summary(y, probs, pred, names)
    assert s["absent"] == ["d"]
    assert s["per_class"]["d"]["auroc"] is None and s["per_class"]["d"]["f1"] is None
    present = [0, 1, 2]
    assert s["f1"] == pytest.approx(skm.f1_score(y, pred, labels=present, average="macro"))
    assert s["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert math.isnan(per_class_auroc(y, probs)[3])
    # asking for a class that is absent makes the macro undefined rather than silently smaller
    assert math.isnan(macro_auroc(y, probs, classes=[0, 1, 2, 3]))
    assert math.isnan(macro_f1(y, pred, classes=[0, 1, 2, 3]))


def test_one_class_only_auroc_undefined():
    assert math.isnan(binary_auroc(np.ones(5), np.arange(5.0)))


def test_quadratic_weighted_kappa_matches_sklearn():
    from sklearn.metrics import cohen_kappa_score

    from dermino.evaluate.metrics import (
        ORDINAL_METRICS,
        quadratic_weighted_kappa,
        quadratic_weighted_kappa_ci,
    )

    rng = np.random.default_rng(0)
    for n_grades in (2, 4, 6):
        y = rng.integers(0, n_grades, 200)
        p = np.clip(y + rng.integers(-1, 2, 200), 0, n_grades - 1)
        assert quadratic_weighted_kappa(y, p) == pytest.approx(cohen_kappa_score(y, p, weights="quadratic"), abs=1e-12)
    # golden value by hand: 3 items, grades 0..2, one off by two
    # O = [[1,0,1],[0,1,0],[0,0,0]]: sum w*O = 4; E = outer([2,1,0],[1,1,1])/3: sum w*E = 10/3 + 2/3
    assert quadratic_weighted_kappa([0, 1, 0], [0, 1, 2]) == pytest.approx(1 - 4 / 4)
    assert quadratic_weighted_kappa([0, 1, 2], [0, 2, 2]) == pytest.approx(1 - 1 / (8 / 3 + 1 + 4 / 3))  # = 0.8
    assert quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3]) == 1.0
    assert np.isnan(quadratic_weighted_kappa([1, 1], [1, 1]))
    y = rng.integers(0, 4, 150)
    p = np.clip(y + rng.integers(-1, 2, 150), 0, 3)
    m = quadratic_weighted_kappa_ci(y, p, n_resamples=200)
    assert m.ci_low < m.value < m.ci_high and m.n == 150
    probs = np.eye(4)[p]
    assert ORDINAL_METRICS["qwk"](y, probs, p, None) == pytest.approx(m.value)
