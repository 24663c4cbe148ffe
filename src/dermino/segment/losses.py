"""Dice + cross-entropy for lesion segmentation.

Cross-entropy alone is dominated by the (usually larger) background; the soft Dice term
scores the overlap of the lesion class directly, which is what we report. The soft Dice is
computed on the lesion-class probability pooled over the whole batch:

    dice = (2 * sum(p * g) + eps) / (sum(p) + sum(g) + eps),   loss = 1 - dice

with ``p`` the softmax probability of the lesion (class 1) and ``g`` the 0/1 target. Pooling
over the batch (rather than averaging per image) keeps the loss defined for images without a
lesion; ``eps`` (1.0) makes an all-background batch predicted all-background score 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dermino.losses.precision import upcast


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """``1 - soft Dice`` of the lesion class; ``logits`` (B, 2, H, W), ``target`` (B, H, W) in {0, 1}."""
    if logits.ndim != 4 or logits.shape[1] != 2:
        raise ValueError(f"logits must be (B, 2, H, W), got {tuple(logits.shape)}")
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    p = upcast(logits).softmax(dim=1)[:, 1]
    g = target.to(p.dtype)
    inter = (p * g).sum()
    return 1.0 - (2.0 * inter + eps) / (p.sum() + g.sum() + eps)


class DiceCELoss(nn.Module):
    """``dice_weight * soft_dice_loss + ce_weight * cross_entropy`` (mean over pixels)."""

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, eps: float = 1.0):
        super().__init__()
        self.dice_weight, self.ce_weight, self.eps = dice_weight, ce_weight, eps

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = upcast(logits).new_zeros(())
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(upcast(logits), target.long())
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(logits, target, self.eps)
        return loss
