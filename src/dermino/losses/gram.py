"""Gram anchoring (DINOv3, Siméoni et al. 2025, Sec. 4.2): keep the patch-to-patch similarity
structure of a Gram teacher while self-distillation improves the global features.

For one image with ``P`` patch features, L2-normalised row-wise into ``X`` (P x D), the Gram
matrix is ``G = X Xᵀ`` (cosine similarity of every pair of patches). The loss is

    L_gram = 1 / (B P²) · Σ_b ‖ G_s(b) − G_t(b) ‖²_F

the mean squared difference between the student's and the Gram teacher's matrices (Eq. 5 of
the paper, written per image). DINOv3 also clips negative similarities to zero before comparing
(``remove_negatives="both"``, its default); ``"target"`` clips only the teacher's, ``"none"``
compares the raw matrices. The teacher side carries no gradient.

The Gram teacher may see the crop at a higher resolution (high-resolution targets): its patch
features are then resized to the student's grid (:func:`resize_patch_grid`) before normalising.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from dermino.losses.precision import upcast

RemoveNegatives = Literal["both", "target", "none"]


def gram_matrices(patches: Tensor) -> Tensor:
    """(B, P, D) patch features -> (B, P, P) cosine similarities between the patches of each image."""
    x = F.normalize(upcast(patches), dim=-1)
    return x @ x.transpose(1, 2)


def gram_loss(student_patches: Tensor, target_patches: Tensor, remove_negatives: RemoveNegatives = "both") -> Tensor:
    """Mean squared difference of the student's and the (detached) target's Gram matrices."""
    if student_patches.shape != target_patches.shape:
        raise ValueError(f"student patches {tuple(student_patches.shape)} and Gram-teacher patches "
                         f"{tuple(target_patches.shape)} differ: resize the teacher's grid first")
    gs = gram_matrices(student_patches)
    gt = gram_matrices(target_patches.detach())
    if remove_negatives in ("both", "target"):
        gt = gt.clamp(min=0)
    if remove_negatives == "both":
        gs = gs.clamp(min=0)
    return (gs - gt).pow(2).mean()


def resize_patch_grid(patches: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, h*w, D) patch features on a square h x w grid -> (B, H*W, D) on ``size`` = (H, W), bilinear."""
    b, p, d = patches.shape
    side = int(round(p ** 0.5))
    if side * side != p:
        raise ValueError(f"{p} patches do not form a square grid")
    if (side, side) == tuple(size):
        return patches
    grid = patches.transpose(1, 2).reshape(b, d, side, side)
    grid = F.interpolate(upcast(grid), size=size, mode="bilinear", align_corners=False)
    return grid.reshape(b, d, size[0] * size[1]).transpose(1, 2)
