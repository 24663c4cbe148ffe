"""Gram distance to the start: how far the teacher's patch-to-patch similarity structure has moved.

For each monitor image, ``G = X Xᵀ`` with ``X`` the L2-normalised last-block patch tokens (P x D),
the same matrix Gram anchoring compares (``dermino.losses.gram``). The distance is the mean over
the monitor images of the Frobenius norm ``‖G_now − G_start‖_F``, with ``G_start`` from the
weights at the start of the run. Those matrices are computed once, before the first step, and
saved beside monitor.csv (``monitor_gram_start.pt``) so a resumed run measures from the same
start; a frozen copy of the start weights would cost a whole model for the same numbers.

It is 0 at the start and grows as dense structure drifts; unlike the kNN score, larger is worse.
"""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from dermino.losses.gram import gram_matrices
from dermino.pretrain.eval_images import eval_batches


@torch.no_grad()
def patch_grams(backbone: nn.Module, df: pd.DataFrame, size: int, device: torch.device, batch_size: int = 32) -> torch.Tensor:
    """(N, P, P) Gram matrices of the last block's L2-normalised patch tokens, one per row of ``df``."""
    out = []
    for x in eval_batches(backbone, df, size, device, batch_size):
        maps = backbone.get_intermediate_layers(x, [-1])[0].float()  # (B, D, h, w)
        out.append(gram_matrices(maps.flatten(2).transpose(1, 2)).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0, 0)


def gram_distance(start: torch.Tensor, now: torch.Tensor) -> float:
    """Mean over images of ``‖now − start‖_F`` for (N, P, P) stacks of Gram matrices."""
    if start.shape != now.shape or start.ndim != 3 or len(start) == 0:
        raise ValueError(f"Gram stacks must be non-empty (N, P, P) of one shape, got {tuple(start.shape)} "
                         f"and {tuple(now.shape)}")
    return float(torch.linalg.matrix_norm((now.double() - start.double()), ord="fro").mean())
