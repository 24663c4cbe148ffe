"""Retrieval: image-to-image R@1/5/10 and mAP by diagnosis; image-to-text R@k where captions exist.

Image-to-image (the "similar cases" a clinician sees): every test image queries the bank of
train + validation images by cosine similarity; a retrieved image is relevant when it has
the query's diagnosis. ``R@k`` is the share of queries with at least one relevant image in
the top ``k`` (the usual definition in DermINO/PanDerm retrieval tables), ``mAP`` the mean
over queries of average precision over the whole ranked bank. Nothing is fitted.

Image-to-text (vision-language backbones only): every test image with a caption queries the
test captions (encoded by the backbone's own text tower); the hit is its own caption (or an
identical text). CIs are percentile bootstraps over queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np

from dermino.config import NonEmpty
from dermino.evaluate.stats import bootstrap_ci
from dermino.results import Metric


@dataclass
class RetrievalConfig:
    ks: Annotated[list[int], NonEmpty()] = field(default_factory=lambda: [1, 5, 10])


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.clip(np.linalg.norm(x, axis=1, keepdims=True), 1e-12, None)


def per_query_retrieval(
    query: np.ndarray, query_y: np.ndarray, bank: np.ndarray, bank_y: np.ndarray,
    ks: Sequence[int] = (1, 5, 10), chunk: int = 512,
) -> dict[str, np.ndarray]:
    """Per query: ``hit@k`` (0/1) for each k and average precision over the full ranked bank."""
    q, b = _unit(query), _unit(bank)
    query_y, bank_y = np.asarray(query_y), np.asarray(bank_y)
    out = {f"r@{k}": np.zeros(len(q)) for k in ks}
    ap = np.full(len(q), np.nan)
    for start in range(0, len(q), chunk):
        sims = q[start : start + chunk] @ b.T
        order = np.argsort(-sims, axis=1, kind="stable")
        rel = bank_y[order] == query_y[start : start + chunk, None]
        for k in ks:
            out[f"r@{k}"][start : start + chunk] = rel[:, :k].any(1)
        cum = np.cumsum(rel, axis=1)
        n_rel = rel.sum(1)
        prec = cum / np.arange(1, rel.shape[1] + 1)
        with np.errstate(invalid="ignore", divide="ignore"):
            ap[start : start + chunk] = np.where(n_rel > 0, (prec * rel).sum(1) / np.maximum(n_rel, 1), np.nan)
    out["map"] = ap
    return out


def image_to_image(
    query: np.ndarray, query_y: np.ndarray, bank: np.ndarray, bank_y: np.ndarray,
    ks: Sequence[int] = (1, 5, 10), n_resamples: int = 1000, seed: int = 0,
) -> dict[str, Metric]:
    """R@k and mAP by diagnosis with bootstrap CIs over queries (queries with no relevant image skip mAP)."""
    per = per_query_retrieval(query, query_y, bank, bank_y, ks)
    out = {}
    for name, values in per.items():
        v = values[np.isfinite(values)]
        if len(v):
            out[name] = bootstrap_ci(lambda a: float(a.mean()), v, n_resamples=n_resamples, seed=seed)
    return out


def image_to_text(
    image_proj: np.ndarray, text_emb: np.ndarray, captions: Sequence[str], ks: Sequence[int] = (1, 5, 10),
    n_resamples: int = 1000, seed: int = 0,
) -> dict[str, Metric]:
    """Image -> caption R@k: row i's caption is text i; an identical caption text also counts."""
    caps = np.asarray([str(c) for c in captions])
    sims = _unit(image_proj) @ _unit(text_emb).T
    order = np.argsort(-sims, axis=1, kind="stable")
    hit = caps[order] == caps[:, None]
    out = {}
    for k in ks:
        out[f"i2t_r@{k}"] = bootstrap_ci(lambda a: float(a.mean()), hit[:, :k].any(1).astype(float),
                                         n_resamples=n_resamples, seed=seed)
    return out
