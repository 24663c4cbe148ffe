"""Linear probe: learns, selects on validation only, and never sees test labels."""

from __future__ import annotations

import numpy as np
import pytest

from dermino.evaluate.linear import LinearConfig, fit_linear_probe, linear_protocol
from dermino.evaluate.metrics import macro_auroc
from dermino.evaluate.splits import carve_validation
from dermino.evaluate.task import EvalTask


def _task(seed=0, n=240, d=12, c=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    centers = rng.normal(size=(c, d)) * 1.5
    x = centers[y] + rng.normal(size=(n, d))
    split = np.array(["train"] * 140 + ["val"] * 40 + ["test"] * 60)
    return EvalTask(x.astype(np.float32), y, split, [f"c{i}" for i in range(c)])


FAST = LinearConfig(epochs=15, weight_decays=[0.0, 1e-2])


def test_learns_separable_classes():
    task = _task()
    pred = linear_protocol(task, FAST)
    assert macro_auroc(pred.y_true, pred.probs) > 0.9
    assert pred.info["weight_decay"] in (0.0, 1e-2)
    assert 1 <= pred.info["epoch"] <= 15


def test_poisoned_test_labels_change_nothing():
    task = _task(1)
    clean = linear_protocol(task, FAST)
    te = task.rows("test")
    poisoned_y = task.y.copy()
    poisoned_y[te] = np.random.default_rng(9).permutation(poisoned_y[te])[::-1]
    poisoned_y[te[:10]] = 2  # and some flipped outright
    poisoned = EvalTask(task.features, poisoned_y, task.split, task.class_names)
    out = linear_protocol(poisoned, FAST)
    np.testing.assert_array_equal(out.probs, clean.probs)
    assert out.info == clean.info


def test_selection_uses_validation_labels():
    # sanity check of the previous test: poisoning *validation* labels does change selection
    task = _task(2)
    clean = linear_protocol(task, FAST)
    va = task.rows("val")
    y = task.y.copy()
    y[va] = (y[va] + 1) % 3
    out = linear_protocol(EvalTask(task.features, y, task.split, task.class_names), FAST)
    assert out.info != clean.info or not np.array_equal(out.probs, clean.probs)


def test_no_validation_means_last_epoch():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 2, size=30)
    probe = fit_linear_probe(x, y, 2, cfg=LinearConfig(epochs=3))
    assert probe.epoch == 3 and probe.val_score is None


def test_minibatch_and_label_errors():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 2, size=30)
    probe = fit_linear_probe(x, y, 2, x, y, LinearConfig(epochs=2, batch_size=8, weight_decays=[0.0]))
    assert probe.predict_proba(x).shape == (30, 2)
    with pytest.raises(ValueError, match="labels must be in"):
        fit_linear_probe(x, y + 5, 2)


def test_carve_validation_keeps_groups_whole():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(50), 3)
    labels = np.repeat(rng.integers(0, 3, size=50), 3)
    val = carve_validation(groups, labels, 0.2, seed=1)
    for g in np.unique(groups):
        assert len(set(val[groups == g])) == 1
    assert 0.1 < val.mean() < 0.35
