"""Temperature scaling and ECE: golden values and the held-out improvement."""

from __future__ import annotations

import numpy as np
import pytest

from dermino.classifier.calibration import (
    expected_calibration_error,
    fit_temperature,
    reliability_bins,
    reliability_diagram,
    softmax,
)


def test_ece_golden_value():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    labels = np.array([0, 0, 0, 1])
    # top-1 conf: 0.9 (right), 0.8 (wrong), 0.6 (right), 0.55 (right) -> all in bin (0.5, 1]
    # acc 3/4, mean conf 0.7125 -> ECE = |0.75 - 0.7125| = 0.0375
    assert expected_calibration_error(probs, labels, n_bins=2) == pytest.approx(0.0375)
    # 10 bins: 0.9 -> bin 8 (0.8, 0.9]: acc 1, conf .9; 0.8 -> bin 7: acc 0; 0.6 -> bin 5; 0.55 -> bin 5
    # ECE = 1/4*|1-.9| + 1/4*|0-.8| + 2/4*|1-.575| = 0.025 + 0.2 + 0.2125
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.4375)
    r = reliability_bins(probs, labels, n_bins=10)
    assert r.count.sum() == 4 and r.count[5] == 2


def test_ece_zero_when_perfectly_calibrated():
    # confidence 0.75 in every row, right on 3 of 4: perfectly calibrated
    probs = np.tile([[0.75, 0.25]], (4, 1))
    assert expected_calibration_error(probs, np.array([0, 0, 0, 1]), n_bins=10) == pytest.approx(0.0)


def _sample(n: int, rng: np.random.Generator, scale: float):
    """Labels drawn from softmax(z); logits reported as z * scale (over-confident when scale > 1)."""
    z = rng.normal(size=(n, 4)) * 1.5
    p = softmax(z)
    y = (rng.random((n, 1)) > p.cumsum(1)).sum(1)  # one categorical draw per row
    return z * scale, y


def test_fit_temperature_recovers_the_scale():
    logits, y = _sample(4000, np.random.default_rng(0), scale=3.0)
    assert fit_temperature(logits, y) == pytest.approx(3.0, rel=0.1)


def test_calibration_lowers_ece_on_held_out_data(tmp_path):
    rng = np.random.default_rng(1)
    val_logits, val_y = _sample(1500, rng, scale=2.5)
    test_logits, test_y = _sample(1500, rng, scale=2.5)
    t = fit_temperature(val_logits, val_y)
    before = expected_calibration_error(softmax(test_logits), test_y)
    after = expected_calibration_error(softmax(test_logits, t), test_y)
    assert before > 0.1 and after < before / 2
    # the ranking (and so AUROC / argmax) is unchanged by a temperature
    assert (softmax(test_logits).argmax(1) == softmax(test_logits, t).argmax(1)).all()
    png = reliability_diagram(softmax(test_logits), softmax(test_logits, t), test_y, tmp_path / "r.png")
    assert png.stat().st_size > 1000


def test_fit_temperature_rejects_bad_shapes():
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(np.zeros((3, 2)), np.zeros(4, dtype=int))
