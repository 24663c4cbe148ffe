"""Knowledge-guided supervision of DermINO (paper Eq. 5-7).

``KnowledgeHead`` (and the other heads of ``dermino.models.knowledge_heads``) scores the student's CLS embedding against disease prototypes W whose rows
are text embeddings of the merged disease names (W_init, Eq. 7). ``knowledge_loss`` is the
masked binary cross-entropy of Eq. 6: a sample is only supervised on the diseases its source
dataset can express (its label space, n_ij = 1); other classes get exactly zero gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dermino.models.knowledge_heads import ProjectionHead

#: the original dermino head (a free Linear between CLS and W); see knowledge_heads for the others
KnowledgeHead = ProjectionHead


def knowledge_loss(logits: Tensor, targets: Tensor, label_space_mask: Tensor) -> Tensor:
    """L_sup (Eq. 6) for (B, C) logits, {0,1} targets y and {0,1} label-space mask n.

    Per sample: mean BCE over the classes in its label space; then the mean over samples
    that have a label space. Eq. 6 divides by all N_g crops because every crop it sees is
    labelled; in a partially labelled batch we divide by the labelled ones so the loss scale
    does not depend on the labelled fraction. Unlabelled rows (all-zero mask) add nothing;
    with no labelled row at all the result is 0 and still part of the graph.
    """
    if not (logits.shape == targets.shape == label_space_mask.shape) or logits.ndim != 2:
        raise ValueError(
            f"logits {tuple(logits.shape)}, targets {tuple(targets.shape)} and label_space_mask "
            f"{tuple(label_space_mask.shape)} must all be the same (B, C)"
        )
    mask = label_space_mask.to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype), reduction="none")
    bce = torch.where(mask > 0, bce, torch.zeros_like(bce))  # exact zeros, even if bce were inf
    n_classes = mask.sum(dim=1)
    per_sample = bce.sum(dim=1) / n_classes.clamp(min=1)
    n_labelled = (n_classes > 0).sum().clamp(min=1)
    return per_sample.sum() / n_labelled


def class_prior_floor(targets: Tensor, label_space_mask: Tensor) -> float:
    """``knowledge_loss`` of the best image-blind predictor: each class's frequency among the
    rows sharing its label space, as a constant probability.

    A reference line for training logs: the term only says something about images once it
    falls below this value (a frozen or untrained network sits at or above it).
    """
    t, m = targets.double(), label_space_mask.double()
    spaces, group = torch.unique(m, dim=0, return_inverse=True)
    prob = torch.zeros_like(t)
    for g in range(len(spaces)):
        rows = group == g
        prob[rows] = (t[rows] * m[rows]).sum(0) / rows.sum()
    logits = torch.logit(prob.clamp(1e-12, 1 - 1e-12))
    return float(knowledge_loss(logits, t, m))
