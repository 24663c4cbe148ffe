"""Validation carving and label subsampling, always by group and never touching test rows.

Images of one lesion (or patient) look alike; if they straddle train and validation, model
selection is judged on near-duplicates of training images. So the validation split carved
from train takes whole groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dermino.data.splits import split_groups


def carve_validation(
    groups: np.ndarray, labels: np.ndarray, fraction: float = 0.15, seed: int = 0
) -> np.ndarray:
    """Boolean mask over the train rows: True = moved to validation.

    Array front end of :func:`dermino.data.splits.split_groups` (the one grouped, stratified
    selection in dermino): whole groups move together, about ``fraction`` of each class.
    """
    groups = np.asarray(groups).astype(str)
    labels = np.asarray(labels)
    if len(groups) != len(labels):
        raise ValueError(f"{len(groups)} groups but {len(labels)} labels")
    frame = pd.DataFrame({"lesion_id": groups, "labels": labels.astype(str)})
    return split_groups(frame, fraction, group_col="lesion_id", stratify_col="labels", seed=seed).to_numpy()


def fewshot_indices(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Up to ``shots`` random rows per class (all rows of a class with fewer)."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=min(shots, int((labels == c).sum())), replace=False)
        for c in np.unique(labels)
    ]
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=int)


def fraction_indices(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A class-stratified random ``fraction`` of rows, at least one per class."""
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        n = max(1, int(round(fraction * len(rows))))
        picks.append(rng.choice(rows, size=n, replace=False))
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, dtype=int)
