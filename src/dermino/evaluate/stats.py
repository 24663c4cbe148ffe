"""Bootstrap confidence intervals and paired comparisons between backbones.

Why percentile intervals: the DermINO paper reports "mean ± bootstrap variance", which is a
spread, not an interval with a coverage guarantee. We report the percentile bootstrap
interval (the alpha/2 and 1-alpha/2 quantiles of the resampled metric), whose coverage is
checked by a simulation test. Resamples on which the metric is undefined (e.g. a resample
containing one class only, for AUROC) are skipped and counted, never silently filled in.

Paired comparisons resample the *same* test rows for both backbones, so the per-image
correlation between the two is kept and the interval of the difference is much tighter than
comparing two independent intervals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dermino.results import Metric

log = logging.getLogger(__name__)


@dataclass
class BootstrapDistribution:
    """The metric on the full data and on every valid resample."""

    value: float
    replicates: np.ndarray  # (n_valid,)
    n_skipped: int
    n: int


@dataclass
class PairedComparison:
    """Difference ``metric(a) - metric(b)`` on the same test rows."""

    a: Metric
    b: Metric
    diff: Metric
    p_value: float  # two-sided paired-bootstrap p-value of H0: diff == 0
    n_skipped: int
    method: str = "paired bootstrap (percentile CI, shifted-null two-sided p)"


@dataclass
class TTestResult:
    statistic: float
    p_value: float
    n: int
    mean_diff: float
    label: str  # what the samples are: "seeds" or "bootstrap replicates" …


def _safe_metric(metric_fn: Callable[..., float], arrays: Sequence[np.ndarray]) -> float:
    """Metric value or NaN when it is undefined on these rows."""
    try:
        value = float(metric_fn(*arrays))
    except (ValueError, ZeroDivisionError, FloatingPointError):
        return math.nan
    return value


def resample_indices(
    n: int, n_resamples: int, rng: np.random.Generator, strata: np.ndarray | None = None
) -> np.ndarray:
    """``(n_resamples, n)`` row indices drawn with replacement (within each stratum if given)."""
    if strata is None:
        return rng.integers(0, n, size=(n_resamples, n))
    strata = np.asarray(strata)
    if len(strata) != n:
        raise ValueError(f"strata has {len(strata)} rows but the arrays have {n}")
    out = np.empty((n_resamples, n), dtype=np.int64)
    col = 0
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        picks = rng.integers(0, len(members), size=(n_resamples, len(members)))
        out[:, col : col + len(members)] = members[picks]
        col += len(members)
    return out


def _check_arrays(arrays: Sequence[np.ndarray]) -> tuple[list[np.ndarray], int]:
    if not arrays:
        raise ValueError("bootstrap needs at least one array")
    arrs = [np.asarray(a) for a in arrays]
    n = len(arrs[0])
    for i, a in enumerate(arrs):
        if len(a) != n:
            raise ValueError(f"array {i} has {len(a)} rows, array 0 has {n}: rows must align")
    if n == 0:
        raise ValueError("bootstrap on zero rows")
    return arrs, n


def bootstrap_distribution(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    strata: np.ndarray | None = None,
) -> BootstrapDistribution:
    """Resample rows of all ``arrays`` together and evaluate ``metric_fn`` on each resample."""
    arrs, n = _check_arrays(arrays)
    value = _safe_metric(metric_fn, arrs)
    rng = np.random.default_rng(seed)
    idx = resample_indices(n, n_resamples, rng, strata)
    reps = np.array([_safe_metric(metric_fn, [a[row] for a in arrs]) for row in idx], dtype=float)
    valid = np.isfinite(reps)
    return BootstrapDistribution(value=value, replicates=reps[valid], n_skipped=int((~valid).sum()), n=n)


def _percentiles(reps: np.ndarray, alpha: float) -> tuple[float | None, float | None]:
    if len(reps) == 0:
        return None, None
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    strata: np.ndarray | None = None,
) -> Metric:
    """Percentile bootstrap CI of ``metric_fn(*arrays)``.

    Rows of all arrays are resampled together (optionally within ``strata``). ``value`` is
    the metric on the full data; resamples where the metric raises ``ValueError`` or returns
    NaN are skipped and counted (logged). ``ci_low``/``ci_high`` are None when no resample
    was valid.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    dist = bootstrap_distribution(metric_fn, *arrays, n_resamples=n_resamples, seed=seed, strata=strata)
    if dist.n_skipped:
        log.debug(
            "bootstrap: %d of %d resamples skipped (metric undefined on them)", dist.n_skipped, n_resamples
        )
    lo, hi = _percentiles(dist.replicates, alpha)
    return Metric(value=dist.value, ci_low=lo, ci_high=hi, n=dist.n)


def paired_bootstrap(
    metric_fn: Callable[..., float],
    y_true: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    strata: np.ndarray | None = None,
) -> PairedComparison:
    """Compare two backbones' predictions on the same test rows.

    ``metric_fn(y_true, pred)``. The same resampled rows are scored for both, the
    difference ``a - b`` gets a percentile CI, and the two-sided p-value uses the
    shifted-null bootstrap: ``p = (1 + #{|d* - d| >= |d|}) / (1 + B)``.
    """
    arrs, n = _check_arrays([y_true, pred_a, pred_b])
    y, pa, pb = arrs
    va, vb = _safe_metric(metric_fn, [y, pa]), _safe_metric(metric_fn, [y, pb])
    d = va - vb
    rng = np.random.default_rng(seed)
    idx = resample_indices(n, n_resamples, rng, strata)
    ra = np.array([_safe_metric(metric_fn, [y[r], pa[r]]) for r in idx])
    rb = np.array([_safe_metric(metric_fn, [y[r], pb[r]]) for r in idx])
    valid = np.isfinite(ra) & np.isfinite(rb)
    ra, rb = ra[valid], rb[valid]
    rd = ra - rb
    if len(rd) and math.isfinite(d):
        p = float((1 + np.sum(np.abs(rd - d) >= abs(d) - 1e-12)) / (1 + len(rd)))
    else:
        p = math.nan
    return PairedComparison(
        a=Metric(va, *_percentiles(ra, alpha), n=n),
        b=Metric(vb, *_percentiles(rb, alpha), n=n),
        diff=Metric(d, *_percentiles(rd, alpha), n=n),
        p_value=min(p, 1.0) if math.isfinite(p) else p,
        n_skipped=int((~valid).sum()),
    )


def paired_ttest(a: Sequence[float], b: Sequence[float], label: str) -> TTestResult:
    """Paired t-test of ``a - b`` (as in the paper), labelled with what the pairs are.

    Over seeds this is a reasonable test. Over bootstrap replicates (what the paper did)
    the p-value shrinks with the number of resamples, not with the data: prefer
    :func:`paired_bootstrap` and read this one as descriptive. The label says which it is.
    """
    from scipy import stats as sps

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired t-test needs two equal-length 1-D samples, got {a.shape} and {b.shape}")
    if len(a) < 2:
        raise ValueError("paired t-test needs at least 2 pairs")
    diff = a - b
    if np.allclose(diff, diff[0]):
        # zero variance: t is infinite (or undefined when the mean difference is 0)
        stat = math.copysign(math.inf, diff[0]) if diff[0] != 0 else math.nan
        p = 0.0 if diff[0] != 0 else 1.0
    else:
        res = sps.ttest_rel(a, b)
        stat, p = float(res.statistic), float(res.pvalue)
    return TTestResult(statistic=stat, p_value=p, n=len(a), mean_diff=float(diff.mean()), label=label)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value) over seeds."""
    v = np.asarray(values, float)
    if len(v) == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def significance_mark(p: float) -> str:
    """``***`` p<0.001, ``**`` p<0.01, ``*`` p<0.05, else empty."""
    if not math.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else ""
