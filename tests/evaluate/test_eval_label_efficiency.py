"""Label-efficiency protocol: lesion-grouped stratified subsets, identical across backbones, curve + AULC."""

from __future__ import annotations

import numpy as np
import pytest

from dermino.evaluate.label_efficiency import (
    LabelEfficiencyConfig,
    _aulc,
    grouped_fraction,
    label_subsets,
    run_label_efficiency,
    subset_digest,
)
from dermino.evaluate.linear import LinearConfig
from dermino.evaluate.task import EvalTask

FAST = LinearConfig(Cs=[0.1, 1.0])


def _task(features_seed=0, n_lesions=150, per=2, c=3, d=16):
    rng = np.random.default_rng(0)  # labels, splits and lesions do not depend on the backbone
    lesion_y = rng.integers(0, c, size=n_lesions)
    y = np.repeat(lesion_y, per)
    groups = np.repeat([f"L{i}" for i in range(n_lesions)], per)
    split = np.repeat(np.where(np.arange(n_lesions) < 90, "train", np.where(np.arange(n_lesions) < 110, "val", "test")),
                      per)
    frng = np.random.default_rng(features_seed)  # the backbone: different features
    x = frng.normal(size=(c, d))[y] * 1.2 + frng.normal(size=(len(y), d))
    return EvalTask(x.astype(np.float32), y, split, [f"c{i}" for i in range(c)], groups)


def test_subsets_take_whole_lesions_and_every_class():
    task = _task()
    subs = label_subsets(task, [0.01, 0.1, 0.3, 1.0], seeds=3)
    train_rows = np.concatenate([task.rows("train"), task.rows("val")])
    for (f, _s), rows in subs.items():
        chosen = set(task.groups[rows])
        for g in np.unique(task.groups[train_rows]):
            members = np.flatnonzero(task.groups == g)
            assert np.isin(members, rows).all() or not np.isin(members, rows).any(), f"lesion {g} split at {f}"
        assert not np.isin(rows, task.rows("test")).any()
        assert set(task.y[np.intersect1d(rows, task.rows("train"))]) == {0, 1, 2}  # >= 1 lesion per class
        if f == 1.0:
            np.testing.assert_array_equal(rows, np.sort(train_rows))
        else:
            assert abs(len(rows) / len(train_rows) - f) < max(0.08, 3 * 3 * 2 / len(train_rows)), (f, len(rows))
        assert len(chosen) * 2 == len(rows)
    # different seeds give different subsets at a fraction below 1
    assert subset_digest(subs[(0.3, 0)]) != subset_digest(subs[(0.3, 1)])


def test_same_subsets_for_every_backbone():
    cfg = LabelEfficiencyConfig(fractions=[0.1, 0.5, 1.0], seeds=2)
    a = run_label_efficiency(_task(features_seed=1), cfg, FAST, n_resamples=20)
    b = run_label_efficiency(_task(features_seed=2), cfg, FAST, n_resamples=20)
    assert {k: v["rows"] for k, v in a["subsets"].items()} == {k: v["rows"] for k, v in b["subsets"].items()}
    assert [p["value"] for p in a["points"]] != [p["value"] for p in b["points"]]  # the features did differ
    expected = label_subsets(_task(), [0.1, 0.5, 1.0], 2)
    assert a["subsets"]["0.1@1"]["rows"] == subset_digest(expected[(0.1, 1)])


def test_curve_cis_and_area():
    res = run_label_efficiency(_task(), LabelEfficiencyConfig(fractions=[0.05, 0.3, 1.0], seeds=2), FAST, n_resamples=60)
    pts = res["points"]
    assert [p["fraction"] for p in pts] == [0.05, 0.3, 1.0]
    for p in pts:
        assert p["ci_low"] <= p["value"] <= p["ci_high"]
        assert p["value"] == pytest.approx(np.mean(p["values"]))
    assert pts[-1]["value"] > 0.8 and pts[-1]["n_labelled"] > pts[0]["n_labelled"]
    area = res["aulc"]
    assert area["ci_low"] <= area["value"] <= area["ci_high"]
    assert area["value"] == pytest.approx(_aulc(np.array([0.05, 0.3, 1.0]), np.array([p["value"] for p in pts])))


def test_aulc_hand_worked():
    # log10 x: -2, -1, 0; trapezoids (0.5+0.7)/2 + (0.7+0.9)/2 = 1.4 over a range of 2
    assert _aulc(np.array([0.01, 0.1, 1.0]), np.array([0.5, 0.7, 0.9])) == pytest.approx(0.7)


def test_grouped_fraction_rejects_bad_fraction():
    with pytest.raises(ValueError):
        grouped_fraction(np.array(["a"]), np.array([0]), 0.0, 0)
