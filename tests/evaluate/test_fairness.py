"""Fairness: per-group values, gaps and parity differences on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from dermino.evaluate.fairness import (
    age_band,
    fairness_report,
    group_columns,
    ordered_groups,
    parity_differences,
)
from dermino.evaluate.task import Predictions


def test_parity_golden_binary():
    # group a: preds 1,1,0,0 for y 1,0,1,0 -> sel .5, TPR .5, FPR .5
    # group b: preds 1,0,0,0 for y 1,0,0,0 -> sel .25, TPR 1, FPR 0
    y = np.array([1, 0, 1, 0, 1, 0, 0, 0])
    pred = np.array([1, 1, 0, 0, 1, 0, 0, 0])
    g = np.array(list("aaaabbbb"))
    dp, eo = parity_differences(y, pred, g, 2)
    assert dp == pytest.approx(0.25)
    assert eo == pytest.approx(0.5)  # max(TPR gap .5, FPR gap .5)


def test_parity_multiclass_is_macro_over_classes():
    y = np.array([0, 1, 2, 0, 1, 2])
    pred = np.array([0, 1, 2, 0, 0, 0])
    g = np.array(list("aaabbb"))
    dp, eo = parity_differences(y, pred, g, 3)
    # selection rates: class0 a 1/3 b 1 -> .667; class1 1/3 vs 0 -> .333; class2 1/3 vs 0 -> .333
    assert dp == pytest.approx((2 / 3 + 1 / 3 + 1 / 3) / 3)
    # class0: TPR 1 vs 1 -> 0, FPR 0 vs 1 -> 1; class1: TPR 1 vs 0 -> 1; class2: same -> 1
    assert eo == pytest.approx(1.0)


def test_report_groups_cis_and_gaps():
    rng = np.random.default_rng(0)
    n = 200
    y = rng.integers(0, 2, size=n)
    sex = np.where(np.arange(n) < 100, "female", "male")
    # the model is much better on females
    noise = np.where(sex == "female", 0.3, 2.0)
    score = np.clip(y + rng.normal(0, noise), -3, 4)
    probs = np.stack([1 - score, score], 1)
    preds = Predictions(np.arange(n), y, probs, (score > 0.5).astype(int))
    groups = np.array(list(sex[:-3]) + ["unknown"] * 3)
    rep = fairness_report(preds, {"sex": groups}, 2, n_resamples=100)["sex"]
    f, m = rep["groups"]["female"], rep["groups"]["male"]
    assert f["auroc"]["value"] > m["auroc"]["value"] + 0.2
    assert f["auroc"]["ci_low"] <= f["auroc"]["value"] <= f["auroc"]["ci_high"]
    assert rep["gap"]["auroc"] == pytest.approx(f["auroc"]["value"] - m["auroc"]["value"])
    assert rep["groups"]["unknown"]["in_gaps"] is False and "unknown" not in rep["groups_in_gaps"]
    assert rep["largest_gap"][0] in ("auroc", "balanced_accuracy", "f1", "accuracy")
    assert 0 <= rep["demographic_parity_difference"] <= 1


def test_group_columns():
    df = pd.DataFrame({"sex": ["male", "", "Female"], "age": ["25", "", "80.0"], "fitzpatrick": ["2", "", "-1"]})
    g = group_columns(df, ["sex", "age", "fitzpatrick", "skin_tone"])
    assert list(g["sex"]) == ["male", "unknown", "female"]
    assert list(g["age"]) == ["<30", "unknown", "75+"]
    assert list(g["fitzpatrick"]) == ["2", "unknown", "unknown"]
    assert "skin_tone" not in g
    assert age_band("abc") == "unknown" and age_band(45) == "45-59"
    assert math.isnan(parity_differences(np.zeros(2, int), np.zeros(2, int), np.array(["a", "a"]), 2)[0])


def test_groups_are_reported_in_natural_order():
    # Alphabetical order would put "<30" after "75+" and "brown" before "very light".
    assert ordered_groups(["75+", "unknown", "<30", "45-59"]) == ["<30", "45-59", "75+", "unknown"]
    assert ordered_groups(["tan", "brown", "very light", "light"]) == ["very light", "light", "tan", "brown"]
    assert ordered_groups(["6", "2", "10"]) == ["2", "6", "10"]


def test_fitzpatrick_groups_beside_single_types():
    from dermino.evaluate.fairness import fitzpatrick_group

    df = pd.DataFrame({"fitzpatrick": ["1", "2.0", "3", "4", "5", "6", "", ""],
                       "fitzpatrick_group": ["", "", "", "", "", "", "56", "I-II"]})
    g = group_columns(df, ["fitzpatrick"])
    assert list(g["fitzpatrick"]) == ["1", "2", "3", "4", "5", "6", "unknown", "unknown"]
    assert list(g["fitzpatrick_group"]) == ["I-II", "I-II", "III-IV", "III-IV", "V-VI", "V-VI", "V-VI", "I-II"]
    assert ordered_groups(["V-VI", "unknown", "I-II", "III-IV"]) == ["I-II", "III-IV", "V-VI", "unknown"]
    assert fitzpatrick_group("-1") == "unknown" and fitzpatrick_group("34") == "III-IV"
