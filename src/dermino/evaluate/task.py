"""What a protocol sees: features, integer labels and splits of one (backbone, dataset) cell.

Protocols only ever read ``y`` at train/val rows for fitting; test labels are used by the
metric code after predictions are made. ``Predictions`` is what every protocol returns and
what the statistics, fairness and paired comparisons consume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EvalTask:
    features: np.ndarray  # (N, D)
    y: np.ndarray  # (N,) int in [0, C)
    split: np.ndarray  # (N,) "train" / "val" / "test"
    class_names: list[str]
    groups: np.ndarray | None = None  # lesion/patient ids (for carving and few-shot)

    def __post_init__(self) -> None:
        n = len(self.features)
        for name in ("y", "split"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"EvalTask: {name} has {len(getattr(self, name))} rows, features {n}")
        self.y = np.asarray(self.y, dtype=int)
        self.split = np.asarray(self.split).astype(str)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)


@dataclass
class Predictions:
    rows: np.ndarray  # indices into the task (test rows)
    y_true: np.ndarray
    probs: np.ndarray  # (M, C)
    pred: np.ndarray  # (M,)
    info: dict = field(default_factory=dict)  # e.g. selected weight decay / epoch
    # the same fitted model on the validation rows (temperature and thresholds are fitted here)
    val_probs: np.ndarray | None = None
    val_y: np.ndarray | None = None
