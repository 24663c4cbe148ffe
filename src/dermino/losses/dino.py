"""Image-level self-distillation loss of DermINO (paper Eq. 1-3).

Cross-entropy between the teacher's targets for each global crop and the student's
temperature-scaled log-softmax for every other crop: global-global pairs give Eq. 1
(L_Image^Global), global-local pairs give Eq. 2 (L_Image^Local-Global); their sum is Eq. 3.

Normalisation: the paper divides both sums by N_g(1+N_l). With the DINOv2 recipe
(N_g = 2, a teacher view never paired with the same student view) the number of pairs is
N_g(N_g-1) + N_g*N_l = N_g(1+N_l), so we divide by the *number of pairs actually used*:
identical to the paper for N_g = 2 and still an average for any other N_g or when
``skip_same_view=False``. Each pair's cross-entropy is averaged over the batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from dermino.losses.precision import upcast


def _check(student_logits: list[Tensor], teacher_probs: list[Tensor]) -> None:
    if not teacher_probs:
        raise ValueError("teacher_probs is empty: need at least one global view")
    if len(student_logits) < len(teacher_probs):
        raise ValueError(
            f"{len(student_logits)} student views but {len(teacher_probs)} teacher views: the student "
            "list must start with the same global views as the teacher list, then the local views"
        )
    shape = teacher_probs[0].shape
    for name, views in (("student", student_logits), ("teacher", teacher_probs)):
        for i, v in enumerate(views):
            if v.ndim != 2 or v.shape != shape:
                raise ValueError(f"{name} view {i} has shape {tuple(v.shape)}, expected {tuple(shape)}")


def _pair_ce(student_logits: list[Tensor], teacher_probs: list[Tensor], temperature: float) -> Tensor:
    """(N_g, V) matrix: batch-mean cross-entropy of teacher view g against student view v."""
    log_p = torch.stack([F.log_softmax(upcast(s) / temperature, dim=-1) for s in student_logits])
    t = torch.stack([upcast(p) for p in teacher_probs])
    return -torch.einsum("gbk,vbk->gv", t, log_p) / t.shape[1]


def dino_loss_terms(
    student_logits: list[Tensor],
    teacher_probs: list[Tensor],
    student_temperature: float = 0.1,
    skip_same_view: bool = True,
) -> dict[str, Tensor]:
    """Eq. 1 and Eq. 2 apart: ``{"global": ..., "local": ...}``; they sum to ``dino_loss``.

    ``student_logits``: the N_g global views (same order as ``teacher_probs``) then the N_l
    local views, each (B, K) raw head outputs. ``teacher_probs``: N_g (B, K) targets.
    """
    _check(student_logits, teacher_probs)
    n_global = len(teacher_probs)
    ce = _pair_ce(student_logits, teacher_probs, student_temperature)  # (N_g, V)
    use = torch.ones_like(ce, dtype=torch.bool)
    if skip_same_view:
        use[:, :n_global] &= ~torch.eye(n_global, dtype=torch.bool, device=ce.device)
    # counted on the host: int(use.sum()) would wait for the device
    n_pairs = ce.numel() - (n_global if skip_same_view else 0)
    if n_pairs == 0:
        raise ValueError("no (teacher, student) pairs left: one global view with skip_same_view=True")
    ce = ce * use
    return {"global": ce[:, :n_global].sum() / n_pairs, "local": ce[:, n_global:].sum() / n_pairs}


def dino_loss(
    student_logits: list[Tensor],
    teacher_probs: list[Tensor],
    student_temperature: float = 0.1,
    skip_same_view: bool = True,
) -> Tensor:
    """L_Image (Eq. 3): mean cross-entropy over all (teacher global view, student view) pairs."""
    terms = dino_loss_terms(student_logits, teacher_probs, student_temperature, skip_same_view)
    return terms["global"] + terms["local"]
