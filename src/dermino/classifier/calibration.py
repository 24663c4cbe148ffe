"""Temperature scaling and calibration error (Guo et al. 2017).

A probe's softmax is usually over- or under-confident; a clinician reading "90 %" should be
right about 90 % of the time. One scalar T (logits / T) fitted on held-out validation logits
by minimising the negative log-likelihood fixes most of that without changing the ranking
(so AUROC and the argmax are unchanged). ECE is the usual equal-width-bin measure on the
top-1 confidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dermino.evaluate.calibration import ece, fit_temperature_logits

#: the evaluation's temperature fit, on logits (one fit for the project)
fit_temperature = fit_temperature_logits


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@dataclass
class Reliability:
    """Per-bin mean confidence, accuracy and count (equal-width bins on [0, 1])."""

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> Reliability:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=int)
    conf, pred = p.max(1), p.argmax(1)
    correct = (pred == y).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bin i holds (edges[i], edges[i+1]]; a confidence of exactly 0 cannot happen for a softmax
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, conf, n_bins) / count
        mean_acc = np.bincount(idx, correct, n_bins) / count
    return Reliability(edges, mean_conf, mean_acc, count.astype(int))


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """sum_b |B_b|/N * |acc(B_b) - conf(B_b)| over equal-width confidence bins (the evaluation's ECE)."""
    return ece(labels, probs, n_bins)


def reliability_diagram(
    before: np.ndarray, after: np.ndarray, labels: np.ndarray, path: str | Path, n_bins: int = 15
) -> Path:
    """Two-panel PNG: accuracy vs confidence per bin, before and after temperature scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharey=True)
    for ax, probs, title in ((axes[0], before, "before"), (axes[1], after, "after temperature scaling")):
        r = reliability_bins(probs, labels, n_bins)
        centres = (r.edges[:-1] + r.edges[1:]) / 2
        used = r.count > 0
        ax.bar(centres[used], r.accuracy[used], width=1 / n_bins, edgecolor="k", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
        error = expected_calibration_error(probs, labels, n_bins)
        ax.set_title(f"{title}\nECE = {error:.3f} (n = {len(labels)})")
        ax.set_xlabel("confidence (top-1 probability)")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
