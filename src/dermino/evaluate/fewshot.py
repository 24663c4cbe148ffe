"""Few-shot and label-fraction curves: the same protocols on subsets of the training labels.

Settings: ``k`` labelled images per class (1, 2, 4, 8, 16) and a fraction of the training
labels (1 %-100 %), each repeated over several seeds and reported as mean and standard
deviation. There is no validation-based selection here: with 1 image per class there is
nothing to carve, and using the full validation labels would spend more labels than the
setting allows; the linear probe uses the first weight decay of its grid and the last epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from dermino.evaluate.knn import KNNConfig, knn_protocol
from dermino.evaluate.linear import LinearConfig, linear_protocol
from dermino.evaluate.metrics import CLASSIFICATION_METRICS
from dermino.evaluate.splits import fewshot_indices, fraction_indices
from dermino.evaluate.stats import mean_std
from dermino.evaluate.task import EvalTask


@dataclass
class FewShotConfig:
    shots: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    fractions: list[float] = field(default_factory=lambda: [0.01, 0.1, 0.5, 1.0])
    seeds: int = 3
    protocols: list[str] = field(default_factory=lambda: ["knn", "linear"])


def _subset_task(task: EvalTask, keep_train: np.ndarray) -> EvalTask:
    """Only the chosen train rows stay labelled; validation rows are dropped."""
    split = np.where(np.isin(task.split, ("train", "val")), "none", task.split)
    split[keep_train] = "train"
    return EvalTask(task.features, task.y, split, task.class_names, task.groups)


def run_fewshot(
    task: EvalTask, cfg: FewShotConfig, knn_cfg: KNNConfig, linear_cfg: LinearConfig,
    metrics: tuple[str, ...] = ("auroc", "balanced_accuracy"),
) -> dict:
    """``{protocol: {"shots"|"fractions": {setting: {metric: {mean, std, values}}}}}``."""
    train_rows = np.concatenate([task.rows("train"), task.rows("val")])
    present = [int(k) for k in np.unique(task.y[task.rows("test")])]
    protocols: dict[str, Callable] = {
        "knn": lambda t: knn_protocol(t, knn_cfg),
        "linear": lambda t: linear_protocol(t, replace(linear_cfg, weight_decays=linear_cfg.weight_decays[:1])),
    }
    unknown = set(cfg.protocols) - set(protocols)
    if unknown:
        raise ValueError(f"few-shot protocols must be knn/linear, got {sorted(unknown)}")
    settings: list[tuple[str, float, Callable[[int], np.ndarray]]] = []
    for s in cfg.shots:
        settings.append(("shots", s, lambda seed, s=s: fewshot_indices(task.y[train_rows], int(s), seed)))
    for f in cfg.fractions:
        settings.append(("fractions", f, lambda seed, f=f: fraction_indices(task.y[train_rows], float(f), seed)))
    out: dict = {p: {"shots": {}, "fractions": {}} for p in cfg.protocols}
    for kind, value, pick in settings:
        values: dict[str, dict[str, list[float]]] = {p: {m: [] for m in metrics} for p in cfg.protocols}
        n_labelled = 0
        for seed in range(cfg.seeds):
            keep = train_rows[pick(seed)]
            n_labelled = len(keep)
            sub = _subset_task(task, keep)
            for p in cfg.protocols:
                pred = protocols[p](sub)
                for m in metrics:
                    values[p][m].append(CLASSIFICATION_METRICS[m](pred.y_true, pred.probs, pred.pred, present))
        for p in cfg.protocols:
            entry = {"n_labelled": n_labelled}
            for m in metrics:
                mean, std = mean_std(values[p][m])
                entry[m] = {"mean": mean, "std": std, "values": values[p][m]}
            out[p][kind][str(value)] = entry
    return out
