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


FAST = LinearConfig(method="adam", epochs=15, weight_decays=[0.0, 1e-2])  # the paper recipe, kept


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
    probe = fit_linear_probe(x, y, 2, cfg=LinearConfig(method="adam", epochs=3))
    assert probe.epoch == 3 and probe.val_score is None


def test_minibatch_and_label_errors():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 4)), rng.integers(0, 2, size=30)
    probe = fit_linear_probe(x, y, 2, x, y, LinearConfig(method="adam", epochs=2, batch_size=8, weight_decays=[0.0]))
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


# --- the default probe: converged L2 logistic regression, checked against scikit-learn -------------


def _hard_task(seed=0, n=600, d=20, c=4):
    """Overlapping classes (AUROC well below 1), so a probe that stops early reads differently."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    x = rng.normal(size=(c, d))[y] * 0.4 + rng.normal(size=(n, d))
    return x.astype(np.float32), y


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_lbfgs_probe_matches_sklearn_at_same_C(C):
    from sklearn.linear_model import LogisticRegression

    x, y = _hard_task()
    xtr, ytr, xte, yte = x[:400], y[:400], x[400:], y[400:]
    cfg = LinearConfig(Cs=[C], standardize=False)
    probe = fit_linear_probe(xtr, ytr, 4, xtr[:50], ytr[:50], cfg)  # one-C grid: nothing to select
    assert probe.method == "lbfgs" and probe.C == C and probe.converged
    ref = LogisticRegression(C=C, solver="lbfgs", max_iter=5000, tol=1e-10).fit(xtr.astype(np.float64), ytr)
    ours, theirs = probe.predict_proba(xte), ref.predict_proba(xte.astype(np.float64))
    assert abs(macro_auroc(yte, ours) - macro_auroc(yte, theirs)) < 0.005
    np.testing.assert_allclose(ours, theirs, atol=2e-3)
    # coefficients: sklearn's multinomial parametrisation is centred over classes (sum_k W_k = 0 from
    # the penalty); ours is the same optimum, so compare directly
    np.testing.assert_allclose(probe.layer.weight.detach().numpy(), ref.coef_, atol=2e-3)
    np.testing.assert_allclose(probe.layer.bias.detach().numpy() - probe.layer.bias.detach().numpy().mean(),
                               ref.intercept_ - ref.intercept_.mean(), atol=2e-3)


def test_lbfgs_selects_C_on_validation_and_records_it():
    x, y = _hard_task(1)
    split = np.array(["train"] * 350 + ["val"] * 100 + ["test"] * 150)
    task = EvalTask(x, y, split, [f"c{i}" for i in range(4)])
    pred = linear_protocol(task)
    assert pred.info["probe"] == "lbfgs" and pred.info["C"] in LinearConfig().Cs
    # the chosen C is the validation argmax over the grid (recomputed independently here)
    from sklearn.linear_model import LogisticRegression

    mu, sd = x[:350].mean(0), x[:350].std(0, ddof=1)
    z = lambda a: (a - mu) / sd  # noqa: E731
    scores = {C: macro_auroc(y[350:450], LogisticRegression(C=C, max_iter=5000, tol=1e-10)
                             .fit(z(x[:350]), y[:350]).predict_proba(z(x[350:450])))
              for C in LinearConfig().Cs}
    best = max(scores.values())
    assert scores[pred.info["C"]] >= best - 1e-3


def test_adam_full_batch_50_steps_is_not_converged_but_lbfgs_is():
    """The bug this default fixes: 50 full-batch Adam steps read lower than the optimum."""
    from sklearn.linear_model import LogisticRegression

    x, y = _hard_task(2, n=800, d=40)
    xtr, ytr, xte, yte = x[:500], y[:500], x[500:], y[500:]
    lb = fit_linear_probe(xtr, ytr, 4, cfg=LinearConfig(default_C=0.1, standardize=False))
    ref = LogisticRegression(C=0.1, max_iter=5000, tol=1e-10).fit(xtr, ytr)
    lb_loss = np.mean(-np.log(lb.predict_proba(xtr)[np.arange(500), ytr]))
    ref_loss = np.mean(-np.log(ref.predict_proba(xtr)[np.arange(500), ytr]))
    assert abs(lb_loss - ref_loss) < 1e-3
    ad = fit_linear_probe(xtr, ytr, 4, cfg=LinearConfig(method="adam", batch_size=0, weight_decays=[0.0],
                                                        standardize=False))
    ad_loss = np.mean(-np.log(ad.predict_proba(xtr)[np.arange(500), ytr]))
    assert ad_loss > ref_loss + 0.02  # 50 steps stop far from the optimum
    assert macro_auroc(yte, lb.predict_proba(xte)) > 0.6


def test_probe_config_choices_are_declared():
    from dermino.config import ConfigError, load_config
    from dermino.evaluate.config import EvalConfig

    with pytest.raises(ConfigError, match="linear.method"):
        load_config(EvalConfig, overrides=["linear.method=sgd"])
    with pytest.raises(ConfigError, match="linear.default_C"):
        load_config(EvalConfig, overrides=["linear.default_C=0"])
