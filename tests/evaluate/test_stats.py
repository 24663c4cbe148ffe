"""Bootstrap CIs: correct value, coverage near nominal, undefined resamples skipped, paired tests."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dermino.evaluate.metrics import macro_auroc
from dermino.evaluate.stats import (
    bootstrap_ci,
    bootstrap_distribution,
    paired_bootstrap,
    paired_ttest,
    resample_indices,
    significance_mark,
)


def test_value_is_metric_on_full_data_and_ci_brackets_it():
    x = np.arange(100, dtype=float)
    m = bootstrap_ci(np.mean, x, n_resamples=300, seed=1)
    assert m.value == pytest.approx(49.5)
    assert m.n == 100
    assert m.ci_low < 49.5 < m.ci_high
    # the standard error of the mean is ~2.9, so the 95 % interval is about +-5.7
    assert 3.5 < (m.ci_high - m.ci_low) / 2 < 8


def test_deterministic_given_seed_and_rows_move_together():
    rng = np.random.default_rng(0)
    a = rng.normal(size=50)
    m1 = bootstrap_ci(lambda u, v: float(np.mean(u - v)), a, a, n_resamples=100, seed=3)
    # u == v in every resample only if rows of both arrays are resampled together
    assert m1.value == 0 and m1.ci_low == 0 and m1.ci_high == 0
    m2 = bootstrap_ci(np.mean, a, n_resamples=100, seed=3)
    m3 = bootstrap_ci(np.mean, a, n_resamples=100, seed=3)
    assert (m2.ci_low, m2.ci_high) == (m3.ci_low, m3.ci_high)


def test_coverage_near_nominal():
    """200 simulated samples of N(0.3, 1), n=60: the 95 % interval should cover 0.3 ~95 % of the time."""
    rng = np.random.default_rng(12345)
    hits = 0
    sims = 200
    for s in range(sims):
        x = rng.normal(0.3, 1.0, size=60)
        dist = bootstrap_distribution(np.mean, x, n_resamples=200, seed=s)
        lo, hi = np.quantile(dist.replicates, [0.025, 0.975])
        hits += lo <= 0.3 <= hi
    rate = hits / sims
    # percentile bootstrap under-covers slightly at n=60; binomial sd at 200 sims is ~1.6 %
    assert 0.88 <= rate <= 0.99, rate


def test_undefined_resamples_are_skipped_and_counted():
    # 1 positive in 30: many resamples contain no positive -> AUROC undefined
    y = np.zeros(30, dtype=int)
    y[0] = 1
    s = np.linspace(0, 1, 30)
    dist = bootstrap_distribution(lambda a, b: macro_auroc(a, b), y, s, n_resamples=200, seed=0)
    # P(row 0 never drawn) = (29/30)^30 ~ 0.36
    assert 40 < dist.n_skipped < 110
    assert len(dist.replicates) == 200 - dist.n_skipped
    assert np.isfinite(dist.replicates).all()
    m = bootstrap_ci(lambda a, b: macro_auroc(a, b), y, s, n_resamples=200, seed=0)
    assert m.value == pytest.approx(0.0)


def test_all_undefined_gives_no_interval():
    y = np.zeros(10, dtype=int)
    m = bootstrap_ci(lambda a, b: macro_auroc(a, b), y, np.ones(10), n_resamples=20)
    assert math.isnan(m.value) and m.ci_low is None and m.ci_high is None


def test_stratified_resampling_keeps_stratum_sizes():
    strata = np.array([0] * 7 + [1] * 3)
    idx = resample_indices(10, 50, np.random.default_rng(0), strata)
    assert ((strata[idx] == 1).sum(axis=1) == 3).all()
    # with strata, the 1-positive AUROC case is always defined
    y = (strata == 1).astype(int)
    dist = bootstrap_distribution(
        lambda a, b: macro_auroc(a, b), y, np.arange(10.0), n_resamples=50, strata=strata
    )
    assert dist.n_skipped == 0


def test_misaligned_arrays_rejected():
    with pytest.raises(ValueError, match="rows must align"):
        bootstrap_ci(lambda a, b: 0.0, np.zeros(3), np.zeros(4))


def test_paired_bootstrap_detects_a_real_difference_and_not_a_null_one():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=300)
    good = y + rng.normal(0, 0.6, size=300)
    bad = y + rng.normal(0, 1.5, size=300)
    fn = lambda a, b: macro_auroc(a, b)  # noqa: E731
    cmp = paired_bootstrap(fn, y, good, bad, n_resamples=300, seed=0)
    assert cmp.diff.value > 0.1
    assert cmp.diff.ci_low > 0
    assert cmp.p_value < 0.01
    same = paired_bootstrap(fn, y, good, good.copy(), n_resamples=100, seed=0)
    assert same.diff.value == 0 and same.p_value == 1.0


def test_paired_ttest_matches_scipy_and_is_labelled():
    from scipy.stats import ttest_rel

    a = np.array([0.81, 0.83, 0.80, 0.85, 0.82])
    b = np.array([0.78, 0.80, 0.79, 0.80, 0.81])
    r = paired_ttest(a, b, label="seeds")
    ref = ttest_rel(a, b)
    assert r.p_value == pytest.approx(ref.pvalue)
    assert r.statistic == pytest.approx(ref.statistic)
    assert r.label == "seeds" and r.n == 5
    assert significance_mark(0.0005) == "***" and significance_mark(0.2) == ""
