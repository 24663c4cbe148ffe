"""Head warm-up for continued pretraining: train the new heads on a frozen backbone first.

DINOv2 releases backbones without their DINO/iBOT projection heads, so a continued run starts
with random heads; their gradients, pushed straight into a good backbone, wreck its features in
the first epochs (reported on facebookresearch/dinov2, issues 204/339/431/432). The cure users
found is to train the heads alone first. During the first ``steps`` optimizer steps:

* the student backbone runs in eval mode (no drop-path; any norm statistics untouched) and its
  gradients are dropped before the optimizer step, so AdamW neither moves nor decays it and
  keeps no state for it: the backbone stays bit-identical;
* the teacher's EMA moves only the heads (the teacher backbone stays bit-identical too);
* lr ramps linearly to the peak over the first quarter and then stays there; weight decay,
  teacher momentum and temperature hold their starting values.

The normal schedules (lr warm-up and cosine, teacher temperature warm-up, ...) then start from
their beginning at step ``steps``: they are built for ``total - steps`` steps and appended.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from torch import nn

log = logging.getLogger(__name__)

# Head warm-up when schedule.head_warmup_images is unset and model.init_weights is set: this share
# of the image budget, at most one epoch (heads on frozen features converge fast; a long run should
# not idle its backbone for 10 % of it). A conservative choice: the CPU evidence
# (benchmarks/evidence_continued.py, docs/continued_pretraining.md) is too small to tune it.
HEAD_WARMUP_FRACTION = 0.1


def head_warmup_steps(head_warmup_images: int | None, init_weights: str | None, global_batch: int,
                      total_steps: int, epoch_images: int | None = None) -> int:
    """Optimizer steps of the head warm-up (0 = none); leaves at least one normal step."""
    images = head_warmup_images
    if images is None:
        images = round(HEAD_WARMUP_FRACTION * total_steps * global_batch) if init_weights else 0
        if epoch_images:
            images = min(images, epoch_images)
    steps = math.ceil(images / global_batch)
    if steps >= total_steps:
        raise ValueError(
            f"schedule.head_warmup_images={images} takes {steps} steps of {global_batch} images, "
            f"the whole budget of {total_steps} steps: lower it or raise the budget"
        )
    return steps


def warmup_lr(peak_lr: float, steps: int) -> np.ndarray:
    """Head learning rate during the warm-up: linear 0 -> peak over a quarter, then the peak."""
    ramp = max(1, steps // 4) if steps else 0
    return np.concatenate([np.linspace(0.0, peak_lr, ramp, endpoint=False),
                           np.full(steps - ramp, peak_lr)]).astype(np.float64)


def prepend(steps: int, schedule: np.ndarray, warm: np.ndarray | None = None) -> np.ndarray:
    """``warm`` (default: the schedule's first value held) for ``steps``, then ``schedule``."""
    if warm is None:
        warm = np.full(steps, schedule[0] if len(schedule) else 0.0)
    if len(warm) != steps:
        raise ValueError(f"warm-up part has {len(warm)} values, expected {steps}")
    return np.concatenate([warm, schedule]).astype(np.float64)


class HeadWarmup:
    """Freezes ``backbone`` for the first ``steps`` optimizer steps (see the module docstring)."""

    def __init__(self, backbone: nn.Module, steps: int):
        self.backbone = backbone
        self.steps = steps
        self.params = [p for p in backbone.parameters() if p.requires_grad]
        if steps:
            log.info("head warm-up: %d steps with the backbone frozen, then the normal schedules", steps)

    def active(self, step: int) -> bool:
        return step < self.steps

    def begin(self, step: int) -> None:
        """Call after ``model.train()``: the frozen backbone runs in eval mode."""
        if self.active(step):
            self.backbone.eval()

    def drop_backbone_grads(self, step: int) -> None:
        """Call before clipping and the optimizer step: a frozen backbone gets no update."""
        if self.active(step):
            for p in self.params:
                p.grad = None
