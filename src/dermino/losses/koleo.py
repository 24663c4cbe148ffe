"""KoLeo regulariser (Kozachenko-Leonenko entropy estimator), paper Methods 4.1.2.

DermINO applies it to the CLS representations of the global crops (the paragraph after
Eq. 3, citing [44]): ``-mean_i log(min_{j != i} ||x_i - x_j||)`` on L2-normalised vectors.
Pushing each sample away from its nearest neighbour spreads the batch over the sphere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dermino.losses.precision import upcast


def koleo_loss(x: Tensor, eps: float = 1e-8) -> Tensor:
    """KoLeo loss of a (B, D) batch (B >= 2); ``eps`` keeps log() finite for duplicates."""
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"koleo_loss needs a (B, D) batch with B >= 2, got shape {tuple(x.shape)}")
    z = F.normalize(upcast(x), dim=-1, eps=eps)
    with torch.no_grad():  # the neighbour *choice* is not differentiated, its distance is
        sim = z @ z.t()
        sim.fill_diagonal_(-float("inf"))
        nearest = sim.argmax(dim=1)
    dist = torch.linalg.vector_norm(z - z[nearest], dim=-1)
    return -torch.log(dist + eps).mean()
