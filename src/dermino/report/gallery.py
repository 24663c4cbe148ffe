"""Picture grids for reports: similar-case retrieval and image / attention-overlay strips.

Why: a table of AUROCs says how often the model is right; a clinician wants to see *which*
cases it thinks are alike. The grid shows each query beside its nearest training images with
their diagnoses and cosine similarities.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from dermino.data.images import read_rgb  # noqa: E402


def nearest_neighbours(
    query: np.ndarray, gallery: np.ndarray, k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and cosine similarities of the ``k`` most similar gallery rows per query row."""
    q = query / np.clip(np.linalg.norm(query, axis=1, keepdims=True), 1e-12, None)
    g = gallery / np.clip(np.linalg.norm(gallery, axis=1, keepdims=True), 1e-12, None)
    sims = q @ g.T
    k = min(k, g.shape[0])
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, axis=1)


def retrieval_grid(
    query_images: Sequence[Path],
    query_labels: Sequence[str],
    neighbour_images: Sequence[Sequence[Path]],
    neighbour_labels: Sequence[Sequence[str]],
    similarities: np.ndarray,
    out_png: str | Path,
    thumb: float = 1.6,
) -> Path:
    """One row per query: the query, then its neighbours (green title = same diagnosis)."""
    rows = len(query_images)
    cols = 1 + max((len(n) for n in neighbour_images), default=0)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * thumb, rows * thumb * 0.95), squeeze=False)
    for r in range(rows):
        ax = axes[r][0]
        ax.imshow(read_rgb(query_images[r]))
        ax.set_title(f"query\n{query_labels[r]}", fontsize=7, fontweight="bold")
        for c, (path, label) in enumerate(zip(neighbour_images[r], neighbour_labels[r], strict=True), start=1):
            ax = axes[r][c]
            ax.imshow(read_rgb(path))
            colour = "green" if label == query_labels[r] else "firebrick"
            ax.set_title(f"{label}\ncos {similarities[r][c - 1]:.2f}", fontsize=7, color=colour)
    return _save_grid(fig, axes, out_png)


def attention_grid(
    images: Sequence[Image.Image],
    overlays: Sequence[Image.Image],
    captions: Sequence[str],
    out_png: str | Path,
    thumb: float = 2.0,
) -> Path:
    """One column per case: the image above its attention overlay, captioned (e.g. truth vs the AI)."""
    n = len(images)
    if not n or len(overlays) != n or len(captions) != n:
        raise ValueError(f"need as many overlays and captions as images, got {n}/{len(overlays)}/{len(captions)}")
    fig, axes = plt.subplots(2, n, figsize=(n * thumb, 2 * thumb + 0.5), squeeze=False)
    for c in range(n):
        axes[0][c].imshow(images[c])
        axes[0][c].set_title(captions[c], fontsize=7)
        axes[1][c].imshow(overlays[c])
    return _save_grid(fig, axes, out_png)


def _save_grid(fig: plt.Figure, axes: np.ndarray, out_png: str | Path) -> Path:
    """Picture grids show images only: no ticks; tight layout; the PNG written, the figure closed."""
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
