"""Teacher target normalisation: Sinkhorn-Knopp (DINOv2, used by DermINO) and classic centering.

The paper (Methods 4.1.2, text before Eq. 1) turns teacher prototype scores into targets
``p_t`` with a softmax followed by Sinkhorn-Knopp normalisation [43]. Sinkhorn alternates
row and column scaling of ``exp(logits / T)`` so that every prototype receives about the same
total mass in a batch (no collapse onto a few prototypes) while every sample stays a
probability distribution. Classic DINO centering is kept as a cheaper alternative.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor, nn


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def _all_reduce(t: Tensor, op=None) -> Tensor:
    if _dist_ready():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def sinkhorn_knopp(teacher_logits: Tensor, temperature: float, n_iterations: int = 3) -> Tensor:
    """Sinkhorn-Knopp targets for (N, K) teacher logits; returns (N, K) probabilities.

    Every row sums to 1 on return; each column sums to about N_total/K after enough
    iterations, where N_total counts the rows of all ranks when torch.distributed is
    initialised (the statistics are all-reduced, so every rank solves the same problem).
    Computed in float32 without gradient, as targets must be.
    """
    if teacher_logits.ndim != 2:
        raise ValueError(f"teacher_logits must be (N, K), got shape {tuple(teacher_logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = teacher_logits.float() / temperature
    # Subtract one global maximum: exp() cannot overflow and the common factor cancels in
    # the first normalisation. It must be the same on every rank, hence the MAX reduce.
    shift = _all_reduce(logits.max().clone(), dist.ReduceOp.MAX if _dist_ready() else None)
    q = torch.exp(logits - shift).t()  # (K, N): prototypes x samples
    n_protos = q.shape[0]
    n_samples = _all_reduce(torch.full((), float(q.shape[1]), device=q.device))  # a fill: no host copy
    q /= _all_reduce(q.sum())
    for _ in range(n_iterations):
        q /= _all_reduce(q.sum(dim=1, keepdim=True))  # each prototype gets mass 1/K
        q /= n_protos
        q /= q.sum(dim=0, keepdim=True)  # each sample gets mass 1/N
        q /= n_samples
    q *= n_samples  # columns (samples) now sum to 1
    return q.t()


class CenteringSoftmax(nn.Module):
    """Classic DINO teacher targets: ``softmax((logits - center) / T)`` with an EMA center.

    ``out_dim`` may be left out; the center is then created on first use. Call ``update``
    with the raw teacher logits after computing the targets of a step (momentum 0.9 by
    default: ``center = 0.9 * center + 0.1 * batch_mean``, batch mean over all ranks).
    """

    center: Tensor

    def __init__(self, out_dim: int | None = None, momentum: float = 0.9):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, out_dim) if out_dim else torch.zeros(0))

    def _ensure_center(self, logits: Tensor) -> None:
        if self.center.numel() == 0:
            self.center = torch.zeros(1, logits.shape[-1], device=logits.device)
        elif self.center.shape[-1] != logits.shape[-1]:
            raise ValueError(f"center has {self.center.shape[-1]} prototypes, logits have {logits.shape[-1]}")

    @torch.no_grad()
    def forward(self, teacher_logits: Tensor, temperature: float) -> Tensor:
        self._ensure_center(teacher_logits)
        return torch.softmax((teacher_logits.float() - self.center) / temperature, dim=-1)

    @torch.no_grad()
    def update(self, teacher_logits: Tensor) -> None:
        self._ensure_center(teacher_logits)
        flat = teacher_logits.float().reshape(-1, teacher_logits.shape[-1])
        total = _all_reduce(flat.sum(dim=0, keepdim=True))
        count = _all_reduce(torch.full((), float(flat.shape[0]), device=flat.device))
        self.center.mul_(self.momentum).add_(total / count, alpha=1 - self.momentum)
