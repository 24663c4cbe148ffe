"""RankMe (Garrido et al., ICML 2023): the effective rank of a set of embeddings.

A collapsing self-supervised model maps images into fewer and fewer directions long before its
kNN accuracy falls; the effective rank sees that without labels. With singular values σ_k of the
(N, D) embedding matrix and p_k = σ_k / Σ_j σ_j + ε,

    RankMe = exp(−Σ_k p_k log p_k)

which is between 1 (all embeddings on one line) and min(N, D) (all directions used equally).
"""

from __future__ import annotations

import numpy as np
import torch

EPS = 1e-7


def effective_rank(embeddings: np.ndarray | torch.Tensor, eps: float = EPS) -> float:
    """RankMe of (N, D) embeddings (rows are images; no centring, as in the paper)."""
    z = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
    if z.ndim != 2 or min(z.shape) == 0:
        raise ValueError(f"effective_rank needs a non-empty (N, D) matrix, got shape {tuple(z.shape)}")
    s = torch.linalg.svdvals(z.double())
    total = s.sum()
    if total <= 0:
        return 1.0  # all zero: a single (degenerate) point
    p = s / total + eps
    return float(torch.exp(-(p * torch.log(p)).sum()))
