"""Patch-level masked-image-modelling loss of DermINO (paper Eq. 4, from iBOT).

For the masked patches of the student's global crops, cross-entropy between the teacher's
patch targets and the student's temperature-scaled log-softmax. Each crop's masked patches
are weighted by 1/(its number of masked patches) so every crop counts the same whatever its
mask ratio, then the sum is divided by the number of crops (``n_images``, N_g*B in Eq. 4:
crops that were not masked count in the denominator and add zero, as in DINOv2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dermino.losses.precision import upcast


def masked_patch_weights(masks: Tensor) -> tuple[Tensor, Tensor]:
    """From (B, N) boolean masks: per-masked-patch weights (M,) and their flat indices (M,).

    ``flat_index`` indexes ``patch_tokens.flatten(0, 1)`` (row-major over B then N), so
    ``tokens.flatten(0, 1)[flat_index]`` gives the M masked tokens in the same order.
    """
    if masks.ndim != 2:
        raise ValueError(f"masks must be (B, N), got shape {tuple(masks.shape)}")
    masks = masks.to(torch.bool)
    per_image = masks.sum(dim=1, keepdim=True).clamp(min=1).float()
    weights = (1.0 / per_image).expand_as(masks)[masks]
    flat_index = masks.flatten().nonzero().squeeze(1)
    return weights, flat_index


def ibot_loss(
    student_patch_logits: Tensor,
    teacher_patch_probs: Tensor,
    mask_weights: Tensor,
    n_images: int,
    student_temperature: float = 0.1,
) -> Tensor:
    """L_Patch (Eq. 4) over the M masked patches: (M, K) logits, (M, K) targets, (M,) weights."""
    if student_patch_logits.shape != teacher_patch_probs.shape or student_patch_logits.ndim != 2:
        raise ValueError(
            f"student {tuple(student_patch_logits.shape)} and teacher {tuple(teacher_patch_probs.shape)} "
            "must both be (M, K)"
        )
    if mask_weights.shape != student_patch_logits.shape[:1]:
        raise ValueError(
            f"mask_weights {tuple(mask_weights.shape)} must be (M,) = ({student_patch_logits.shape[0]},)"
        )
    if n_images <= 0:
        raise ValueError(f"n_images must be > 0, got {n_images}")
    log_p = F.log_softmax(upcast(student_patch_logits) / student_temperature, dim=-1)
    ce = -(upcast(teacher_patch_probs) * log_p).sum(dim=-1)
    return (ce * mask_weights.to(ce.dtype)).sum() / n_images
