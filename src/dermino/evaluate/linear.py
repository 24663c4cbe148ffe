"""Linear probe on frozen features (paper: Adam, lr 5e-3, cosine schedule, 50 epochs).

Model selection (weight decay from a grid, and the epoch) is judged on a validation split
carved from train, never on test: ``fit_linear_probe`` does not take test labels at all,
and the protocol wrapper only passes test *features* to the fitted probe. A test runs the
probe with poisoned test labels and checks predictions are unchanged.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from dermino.evaluate.metrics import balanced_accuracy, macro_auroc
from dermino.evaluate.task import EvalTask, Predictions


@dataclass
class LinearConfig:
    epochs: int = 50
    lr: float = 5e-3
    weight_decays: list[float] = field(default_factory=lambda: [0.0, 1e-4, 1e-3, 1e-2])
    batch_size: int = 0  # 0 = full batch
    standardize: bool = True  # z-score with train statistics
    select_metric: str = "auroc"  # auroc | balanced_accuracy | loss (on validation)
    seed: int = 0


@dataclass
class LinearProbe:
    """A fitted probe: standardisation + one linear layer, and how it was chosen."""

    layer: nn.Linear
    mean: torch.Tensor
    std: torch.Tensor
    weight_decay: float
    epoch: int
    val_score: float | None
    history: dict[str, list[float]]

    @torch.inference_mode()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        t = (torch.as_tensor(np.asarray(x), dtype=torch.float32) - self.mean) / self.std
        return torch.softmax(self.layer(t), dim=1).double().numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.predict_proba(x).argmax(1)


def _score(metric: str, y: np.ndarray, logits: torch.Tensor) -> float:
    """Higher is better."""
    if metric == "loss":
        return -float(nn.functional.cross_entropy(logits, torch.as_tensor(y)))
    probs = torch.softmax(logits, 1).double().numpy()
    if metric == "auroc":
        value = macro_auroc(y, probs)
        if not math.isnan(value):
            return value
    if metric in ("auroc", "balanced_accuracy"):
        return balanced_accuracy(y, probs.argmax(1))
    raise ValueError(f"unknown select_metric {metric!r}: use auroc, balanced_accuracy or loss")


def _train_one(
    x: torch.Tensor, y: torch.Tensor, n_classes: int, wd: float, cfg: LinearConfig,
    val: tuple[torch.Tensor, np.ndarray] | None,
) -> tuple[nn.Linear, int, float | None, list[float]]:
    gen = torch.Generator().manual_seed(cfg.seed)
    layer = nn.Linear(x.shape[1], n_classes)
    with torch.no_grad():
        nn.init.normal_(layer.weight, std=0.01, generator=gen)
        layer.bias.zero_()
    opt = torch.optim.Adam(layer.parameters(), lr=cfg.lr, weight_decay=wd)
    bs = cfg.batch_size if 0 < cfg.batch_size < len(x) else len(x)
    steps_per_epoch = math.ceil(len(x) / bs)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.epochs * steps_per_epoch))
    best_state, best_epoch, best_score = None, cfg.epochs, None
    scores: list[float] = []
    for epoch in range(1, cfg.epochs + 1):
        order = torch.randperm(len(x), generator=gen) if bs < len(x) else torch.arange(len(x))
        for start in range(0, len(x), bs):
            idx = order[start : start + bs]
            loss = nn.functional.cross_entropy(layer(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if val is not None:
            with torch.no_grad():
                s = _score(cfg.select_metric, val[1], layer(val[0]))
            scores.append(s)
            if best_score is None or s > best_score:
                best_score, best_epoch, best_state = s, epoch, copy.deepcopy(layer.state_dict())
    if best_state is not None:
        layer.load_state_dict(best_state)
    return layer, best_epoch, best_score, scores


def fit_linear_probe(
    train_x: np.ndarray, train_y: np.ndarray, n_classes: int,
    val_x: np.ndarray | None = None, val_y: np.ndarray | None = None,
    cfg: LinearConfig | None = None,
) -> LinearProbe:
    """Train on train rows; choose weight decay and epoch on the validation rows.

    Without validation rows there is no selection: the first weight decay of the grid and
    the last epoch are used.
    """
    cfg = cfg or LinearConfig()
    train_y = np.asarray(train_y, dtype=int)
    if len(train_x) != len(train_y) or len(train_x) == 0:
        raise ValueError(f"linear probe: {len(train_x)} train features vs {len(train_y)} labels")
    if train_y.max() >= n_classes or train_y.min() < 0:
        raise ValueError(f"linear probe: labels must be in [0, {n_classes}), got max {train_y.max()}")
    torch.manual_seed(cfg.seed)
    x = torch.as_tensor(np.asarray(train_x), dtype=torch.float32)
    mean = x.mean(0) if cfg.standardize else torch.zeros(x.shape[1])
    std = x.std(0).clamp_min(1e-6) if cfg.standardize and len(x) > 1 else torch.ones(x.shape[1])
    x = (x - mean) / std
    y = torch.as_tensor(train_y)
    has_val = val_x is not None and val_y is not None and len(val_y) > 0
    val = None
    if has_val:
        vx = (torch.as_tensor(np.asarray(val_x), dtype=torch.float32) - mean) / std
        val = (vx, np.asarray(val_y, dtype=int))
    grid = cfg.weight_decays if has_val else cfg.weight_decays[:1]
    best: LinearProbe | None = None
    history: dict[str, list[float]] = {}
    for wd in grid:
        layer, epoch, score, scores = _train_one(x, y, n_classes, wd, cfg, val)
        history[f"wd={wd:g}"] = scores
        if best is None or (score is not None and best.val_score is not None and score > best.val_score):
            best = LinearProbe(layer, mean, std, wd, epoch, score, history)
    assert best is not None
    best.history = history
    return best


def linear_protocol(task: EvalTask, cfg: LinearConfig | None = None) -> Predictions:
    """Fit on train rows, select on val rows, predict test rows (test labels are never passed)."""
    tr, va, te = task.rows("train"), task.rows("val"), task.rows("test")
    probe = fit_linear_probe(
        task.features[tr], task.y[tr], task.n_classes, task.features[va], task.y[va], cfg
    )
    probs = probe.predict_proba(task.features[te])
    return Predictions(
        rows=te, y_true=task.y[te], probs=probs, pred=probs.argmax(1),
        info={"weight_decay": probe.weight_decay, "epoch": probe.epoch, "val_score": probe.val_score},
    )
