"""Label efficiency: linear probes on 1 / 10 / 30 / 50 / 100 % of the training labels.

The protocol DermFM-Zero and PanDerm report, made comparable across backbones:

* **Subsets by lesion**: each subset takes whole lesion (or patient) groups, about
  ``fraction`` of each class, and at least one group of every class present. The train and
  the validation rows are both subsampled with the same fraction (the validation labels are
  labels too: choosing C on 15 % of the data while "training on 1 %" would overstate label
  efficiency); with no usable validation rows the probe falls back to ``linear.default_C``.
* **The same subsets for every backbone**: a subset depends only on the labels, the groups,
  the fraction and the seed (never on features), and its digest is written to the results so
  a reader can check two backbones saw the same rows.
* **Curve with CIs**: the point at each fraction is the mean over ``seeds`` subsets of the
  test metric; its 95 % CI is a percentile bootstrap over test images (the same resampled
  rows for every seed and fraction). The spread over seeds (std) is reported beside it.
* **Area under the curve** (AULC): trapezoid over ``log10(fraction)``, normalised by the
  log-range so it lives on the metric's scale (1 % counts as much as 100 % would on a linear
  axis), with a CI from the same bootstrap.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

import numpy as np

from dermino.config import AtLeast1, NonEmpty
from dermino.evaluate.linear import LinearConfig, linear_protocol
from dermino.evaluate.metrics import CLASSIFICATION_METRICS
from dermino.evaluate.splits import carve_validation
from dermino.evaluate.stats import resample_indices
from dermino.evaluate.task import EvalTask


@dataclass
class LabelEfficiencyConfig:
    fractions: Annotated[list[float], NonEmpty()] = field(default_factory=lambda: [0.01, 0.1, 0.3, 0.5, 1.0])
    seeds: Annotated[int, AtLeast1] = 3
    metric: Literal["auroc", "balanced_accuracy", "f1", "accuracy"] = "auroc"


def grouped_fraction(groups: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask: about ``fraction`` of each class, whole groups only, >= 1 group per class."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    groups, labels = np.asarray(groups).astype(str), np.asarray(labels)
    if fraction >= 1.0 or len(labels) == 0:
        return np.ones(len(labels), dtype=bool)
    mask = np.array(carve_validation(groups, labels, fraction, seed), dtype=bool)
    rng = np.random.default_rng([seed, 7])
    for c in np.unique(labels):
        if not mask[labels == c].any():
            pick = rng.choice(np.unique(groups[labels == c]))
            mask |= groups == pick
    return mask


def label_subsets(task: EvalTask, fractions: list[float], seeds: int) -> dict[tuple[float, int], np.ndarray]:
    """``(fraction, seed) -> task rows kept`` (train and validation rows subsampled alike)."""
    groups = task.groups if task.groups is not None else np.arange(len(task.y)).astype(str)
    out = {}
    for f in fractions:
        for s in range(seeds):
            keep = []
            for name in ("train", "val"):
                rows = task.rows(name)
                if len(rows):
                    keep.append(rows[grouped_fraction(groups[rows], task.y[rows], float(f), s)])
            out[(float(f), s)] = np.sort(np.concatenate(keep)) if keep else np.zeros(0, dtype=int)
    return out


def subset_digest(rows: np.ndarray) -> str:
    return hashlib.sha1(np.asarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


def _aulc(fractions: np.ndarray, curve: np.ndarray) -> float:
    if len(fractions) < 2:
        return float(curve[0]) if len(curve) else math.nan
    x = np.log10(fractions)
    ys = curve
    area = float(np.sum((x[1:] - x[:-1]) * (ys[1:] + ys[:-1]) / 2))
    return area / float(x[-1] - x[0])


def run_label_efficiency(
    task: EvalTask, cfg: LabelEfficiencyConfig | None = None, linear_cfg: LinearConfig | None = None,
    n_resamples: int = 1000, seed: int = 0, alpha: float = 0.05,
) -> dict:
    """Fit a probe per (fraction, seed) subset; return the curve, its CIs, the AULC and subset digests."""
    cfg = cfg or LabelEfficiencyConfig()
    linear_cfg = linear_cfg or LinearConfig()
    fractions = sorted(float(f) for f in cfg.fractions)
    subsets = label_subsets(task, fractions, cfg.seeds)
    te = task.rows("test")
    y = task.y[te]
    present = [int(k) for k in np.unique(y)]
    fn = CLASSIFICATION_METRICS[cfg.metric]
    probs = np.zeros((len(te), len(fractions), cfg.seeds, task.n_classes))
    n_labelled: dict[float, int] = {}
    infos: dict[str, dict] = {}
    for i, f in enumerate(fractions):
        for s in range(cfg.seeds):
            keep = subsets[(f, s)]
            split = np.where(np.isin(task.split, ("train", "val")), "none", task.split)
            split[keep] = task.split[keep]
            sub = EvalTask(task.features, task.y, split, task.class_names, task.groups)
            pred = linear_protocol(sub, replace(linear_cfg, seed=s))
            probs[:, i, s] = pred.probs
            n_labelled[f] = len(keep)
            infos[f"{f:g}@{s}"] = {**pred.info, "rows": subset_digest(keep), "n_labelled": len(keep)}

    def curve_of(yy: np.ndarray, pp: np.ndarray) -> np.ndarray:
        return np.array([np.mean([fn(yy, pp[:, i, s], pp[:, i, s].argmax(1), present) for s in range(cfg.seeds)])
                         for i in range(len(fractions))])

    per_seed = np.array([[fn(y, probs[:, i, s], probs[:, i, s].argmax(1), present) for s in range(cfg.seeds)]
                         for i in range(len(fractions))])
    curve = per_seed.mean(1)
    idx = resample_indices(len(y), n_resamples, np.random.default_rng(seed))
    reps, areas = [], []
    for r in idx:
        try:
            c = curve_of(y[r], probs[r])
        except ValueError:
            continue
        if np.all(np.isfinite(c)):
            reps.append(c)
            areas.append(_aulc(np.array(fractions), c))
    reps_a = np.array(reps) if reps else np.zeros((0, len(fractions)))
    q = (np.quantile(reps_a, [alpha / 2, 1 - alpha / 2], axis=0) if len(reps_a)
         else np.full((2, len(fractions)), np.nan))
    points = [
        {"fraction": f, "n_labelled": n_labelled[f], "value": float(curve[i]),
         "ci_low": float(q[0, i]), "ci_high": float(q[1, i]),
         "std_over_seeds": float(per_seed[i].std(ddof=1)) if cfg.seeds > 1 else 0.0,
         "values": per_seed[i].tolist()}
        for i, f in enumerate(fractions)
    ]
    area_q = np.quantile(areas, [alpha / 2, 1 - alpha / 2]) if areas else [math.nan, math.nan]
    return {
        "metric": cfg.metric, "seeds": cfg.seeds, "points": points,
        "aulc": {"value": _aulc(np.array(fractions), curve), "ci_low": float(area_q[0]), "ci_high": float(area_q[1]),
                 "x": "log10(fraction), normalised"},
        "subsets": infos, "n_resamples_valid": len(reps),
    }
