"""Summary-table columns from the calibration protocol's results."""

from __future__ import annotations

from dermino.evaluate.tables import _largest_gap, calibration_columns
from dermino.results import Metric, Result


def test_largest_gap_by_absolute_value_and_flag():
    metrics = {
        "ece": Metric(0.05, 0.03, 0.07),
        "tpr_gap|sex|class=mel": Metric(-0.30, -0.45, -0.12),  # largest |gap|, CI below zero: flagged
        "fpr_gap|sex|class=mel": Metric(0.10, -0.02, 0.20),
        "ece_gap|sex": Metric(0.02, -0.01, 0.05),
    }
    assert _largest_gap(metrics, ("tpr_gap|", "fpr_gap|")) == "sex|class=mel: -0.300 [-0.450, -0.120] !"
    assert _largest_gap(metrics, ("ece_gap|",)) == "sex: 0.020 [-0.010, 0.050]"
    assert _largest_gap(metrics, ("nothing|",)) == ""


def test_calibration_columns_key_on_the_protocol():
    r = Result("bb", "ham", "calibration-linear", {"ece": Metric(0.041, 0.03, 0.05),
                                                     "ece_gap|skin_tone": Metric(0.08, 0.01, 0.12)})
    cols = calibration_columns([r, Result("bb", "ham", "linear", {"auroc": Metric(0.8)})])
    assert list(cols) == [("ham", "linear", "bb")]
    assert cols[("ham", "linear", "bb")]["ece"].startswith("0.041")
    assert cols[("ham", "linear", "bb")]["largest_ece_gap"].endswith("!")
    assert cols[("ham", "linear", "bb")]["largest_eo_gap"] == ""
