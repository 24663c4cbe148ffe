"""Per-group ECE after temperature scaling and equalised-odds gaps: hand-worked and independent numpy checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dermino.evaluate.calibration import (
    CalibrationConfig,
    ece,
    fit_temperature,
    fit_temperature_logits,
    flagged_gaps,
    group_calibration_report,
    temperature_scale,
    youden_threshold,
)
from dermino.evaluate.task import Predictions


def test_ece_hand_worked():
    # 4 bins of width 0.25; confidences .8 (right), .7 (wrong), .6 (right), .9 (right)
    probs = np.array([[0.2, 0.8], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]])
    y = np.array([1, 0, 0, 0])
    # bin (0.5, 0.75]: .7, .6 -> acc 0.5, conf 0.65 -> 2/4 * 0.15; bin (0.75, 1]: acc 1, conf 0.85 -> 2/4 * 0.15
    assert ece(y, probs, n_bins=4) == pytest.approx(0.15)
    assert ece(y, probs, n_bins=2) == pytest.approx(0.0)  # one bin: acc 0.75 = mean conf 0.75


def _ece_reference(y, probs, n_bins):
    conf, acc = probs.max(1), (probs.argmax(1) == y)
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        m = (conf > lo) & (conf <= hi) if b else (conf >= 0) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(acc[m].mean() - conf[m].mean())
    return total


def test_ece_matches_independent_numpy_and_classifier_module():
    from dermino.classifier.calibration import expected_calibration_error

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(500, 5)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 5, size=500)
    for bins in (5, 15):
        assert ece(y, probs, bins) == pytest.approx(_ece_reference(y, probs, bins), abs=1e-12)
        assert ece(y, probs, bins) == pytest.approx(expected_calibration_error(probs, y, bins), abs=1e-12)


def test_temperature_minimises_validation_nll_and_keeps_ranking():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, size=400)
    logits = rng.normal(size=(400, 3)) + 1.5 * np.eye(3)[y]
    logits *= 3.0  # over-confident
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    t = fit_temperature(probs, y)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))

    def nll(T):
        z = logits / T
        z = z - z.max(1, keepdims=True)
        return -(z[np.arange(400), y] - np.log(np.exp(z).sum(1))).mean()

    best = grid[np.argmin([nll(T) for T in grid])]
    assert t == pytest.approx(best, rel=5e-3) and t > 1.5
    np.testing.assert_array_equal(temperature_scale(probs, t).argmax(1), probs.argmax(1))
    # one fit for the project: on logits (the classifier's) and on probabilities (the probes') agree
    from dermino.classifier.calibration import fit_temperature as classifier_fit

    assert classifier_fit is fit_temperature_logits
    assert fit_temperature_logits(logits, y) == pytest.approx(t, rel=1e-4)
    assert ece(y, temperature_scale(probs, t)) < ece(y, probs)


def test_youden_threshold_hand_worked():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.3, 0.9])
    # t=0.8: TPR 2/3, FPR 0 -> J 0.667; t=0.3: TPR 1, FPR 2/3; t=0.4: TPR 2/3, FPR 1/3
    assert youden_threshold(y, s) == pytest.approx(0.8)
    assert math.isnan(youden_threshold(np.ones(3), np.array([0.1, 0.2, 0.3])))


def _binary_preds(seed, n_test=1200, bias=0.0):
    """Binary task; group B's positives score lower by ``bias`` (a TPR gap at any threshold)."""
    rng = np.random.default_rng(seed)

    def draw(n):
        y = rng.integers(0, 2, size=n)
        g = np.where(rng.random(n) < 0.5, "A", "B")
        s = rng.normal(size=n) + 1.5 * y - bias * ((g == "B") & (y == 1))
        p1 = 1 / (1 + np.exp(-s))
        return y, g, np.stack([1 - p1, p1], 1)

    vy, _, vp = draw(600)
    ty, tg, tp = draw(n_test)
    return Predictions(rows=np.arange(n_test), y_true=ty, probs=tp, pred=tp.argmax(1), val_probs=vp, val_y=vy), tg


def test_equalised_odds_against_independent_numpy():
    preds, groups = _binary_preds(0, bias=1.0)
    rep = group_calibration_report(preds, {"sex": groups}, 2, CalibrationConfig(min_group_size=5), n_resamples=200)
    # threshold: brute-force Youden on the raw validation score (binary temperature scaling is monotone)
    s_val, y_val = preds.val_probs[:, 1], preds.val_y
    cands = np.unique(s_val)
    j = [((s_val >= t) & (y_val == 1)).sum() / (y_val == 1).sum() - ((s_val >= t) & (y_val == 0)).sum()
         / (y_val == 0).sum() for t in cands]
    t_raw = cands[np.flatnonzero(np.array(j) == max(j))[-1]]
    hit, y = preds.probs[:, 1] >= t_raw, preds.y_true
    tpr = {g: hit[(groups == g) & (y == 1)].mean() for g in ("A", "B")}
    fpr = {g: hit[(groups == g) & (y == 0)].mean() for g in ("A", "B")}
    eo = rep["attributes"]["sex"]["equalized_odds"]["1"]
    assert eo["tpr_by_group"] == pytest.approx(tpr) and eo["fpr_by_group"] == pytest.approx(fpr)
    assert eo["tpr_gap"]["value"] == pytest.approx(abs(tpr["A"] - tpr["B"]))
    assert eo["tpr_gap"]["pair"] == ["A", "B"]  # B's positives were made harder
    assert eo["tpr_gap"]["flag"] and eo["tpr_gap"]["ci_low"] > 0
    assert any("TPR gap" in line for line in flagged_gaps(rep))
    # ECE per group: independent recomputation after the report's temperature
    scaled = temperature_scale(preds.probs, rep["temperature"])
    for g in ("A", "B"):
        m = groups == g
        assert rep["attributes"]["sex"]["groups"][g]["ece"]["value"] == pytest.approx(
            _ece_reference(y[m], scaled[m], 15), abs=1e-12)
        lo, hi = (rep["attributes"]["sex"]["groups"][g]["ece"][k] for k in ("ci_low", "ci_high"))
        assert lo <= rep["attributes"]["sex"]["groups"][g]["ece"]["value"] <= hi


def test_no_gap_no_flag_and_small_groups_left_out():
    preds, groups = _binary_preds(3, bias=0.0)
    groups = groups.copy()
    groups[:4] = "C"  # a 4-image group: reported, not in the gaps
    rep = group_calibration_report(preds, {"fitzpatrick_group": groups}, 2, CalibrationConfig(min_group_size=10),
                                   n_resamples=300)
    entry = rep["attributes"]["fitzpatrick_group"]
    assert entry["groups"]["C"]["n"] == 4 and not entry["groups"]["C"]["in_gaps"]
    assert entry["groups_in_gaps"] == ["A", "B"]
    eo = entry["equalized_odds"]["1"]
    assert not eo["tpr_gap"]["flag"] and eo["tpr_gap"]["ci_low"] < 0 < eo["tpr_gap"]["ci_high"]


def test_group_with_too_few_positives_left_out_of_the_tpr_gap():
    """A 12-image group holding one positive has a TPR of 0 or 1 in every resample: its bootstrap
    is degenerate ([1, 1]) and would flag a gap from a single image. It stays in the FPR gap."""
    preds, groups = _binary_preds(3, bias=0.0)
    groups = groups.copy()
    y, p1 = preds.y_true, preds.probs[:, 1]
    one_positive = np.flatnonzero(y == 1)[np.argmax(p1[y == 1])]  # the surest positive: a hit
    negatives = np.flatnonzero(y == 0)[:11]
    groups[np.r_[one_positive, negatives]] = "C"
    rep = group_calibration_report(preds, {"fitzpatrick_group": groups}, 2, CalibrationConfig(min_group_size=10),
                                   n_resamples=300)
    entry = rep["attributes"]["fitzpatrick_group"]
    assert entry["groups"]["C"]["in_gaps"]  # 12 rows: in the ECE gap
    eo = entry["equalized_odds"]["1"]
    assert eo["tpr_by_group"]["C"] == 1.0  # reported ...
    assert eo["tpr_groups_in_gap"] == ["A", "B"]  # ... but one positive is not a rate to compare
    assert "C" not in eo["tpr_gap"]["pair"] and not eo["tpr_gap"]["flag"]
    assert eo["fpr_groups_in_gap"] == ["A", "B", "C"]
    assert not any("TPR gap" in line for line in flagged_gaps(rep))


def test_hand_worked_gap_at_fixed_threshold():
    """Two groups, threshold fixed by validation at 0.6: TPR A = 2/3, TPR B = 1/2; FPR A = 0, FPR B = 1/2."""
    val_probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    val_y = np.array([0, 0, 1, 1])  # Youden: any t in (0.2, 0.6] separates; ties -> highest = 0.6
    ty = np.array([1, 1, 1, 0, 0, 1, 1, 0, 0])
    p1 = np.array([0.9, 0.7, 0.3, 0.1, 0.2, 0.8, 0.2, 0.9, 0.1])
    g = np.array(["A", "A", "A", "A", "A", "B", "B", "B", "B"])
    preds = Predictions(rows=np.arange(9), y_true=ty, probs=np.stack([1 - p1, p1], 1), pred=(p1 > 0.5).astype(int),
                        val_probs=val_probs, val_y=val_y)
    rep = group_calibration_report(preds, {"sex": g}, 2, CalibrationConfig(min_group_size=1), n_resamples=50)
    eo = rep["attributes"]["sex"]["equalized_odds"]["1"]
    assert eo["tpr_by_group"] == pytest.approx({"A": 2 / 3, "B": 1 / 2})
    assert eo["fpr_by_group"] == pytest.approx({"A": 0.0, "B": 1 / 2})
    assert eo["tpr_gap"]["value"] == pytest.approx(1 / 6) and eo["fpr_gap"]["value"] == pytest.approx(0.5)
    assert eo["fpr_gap"]["pair"] == ["B", "A"]


def test_needs_validation_predictions():
    preds, groups = _binary_preds(0)
    preds.val_probs = None
    with pytest.raises(ValueError, match="validation"):
        group_calibration_report(preds, {"sex": groups}, 2)
