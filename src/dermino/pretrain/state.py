"""The small typed objects a training step works on, instead of the whole trainer.

``StepParts`` is what one optimizer step needs and never reassigns (the models, the optimizer,
the schedules, the precision); ``LoopState`` is what the loop advances and a checkpoint keeps
(step, consecutive bad steps, images consumed, data position). The trainer builds both once
(:mod:`dermino.pretrain.builders`), and the step (:class:`dermino.pretrain.fast_step.TrainStep`)
reads the first and updates the second.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dermino.pretrain.model import StudentTeacher
from dermino.pretrain.warmup import HeadWarmup


@dataclass
class LoopState:
    """What the loop advances; saved in every checkpoint."""

    step: int = 0  # optimizer steps done
    bad_steps: int = 0  # consecutive non-finite steps (skipped) up to now
    # images consumed so far; kept in the checkpoint, so an allowed batch-size change on resume
    # does not make the logged image and epoch counters jump (step x new batch would)
    images_seen: int = 0
    data_state: tuple[int, int] = (0, 0)  # (epoch, images consumed by this rank in that epoch)


@dataclass
class Schedules:
    """Per-optimizer-step values (a head warm-up first, when there is one, then the recipe)."""

    lr: np.ndarray
    wd: np.ndarray
    momentum: np.ndarray
    teacher_temp: np.ndarray
    freeze_last_layer_steps: int
    warmup: HeadWarmup


@dataclass
class StepParts:
    """Everything one optimizer step reads."""

    model: StudentTeacher
    student: nn.Module  # the student as trained: DDP-wrapped or FSDP-sharded where distributed
    student_call: nn.Module  # the same, compiled when run.compile
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    params: list[nn.Parameter]
    last_layer_params: list[nn.Parameter]
    schedules: Schedules
    total_steps: int
    device: torch.device
    fsdp: bool
    clip_grad: float  # <= 0: no clipping (the norm is still measured)
    amp_dtype: torch.dtype | None
    to_device: Callable[[dict[str, Any]], dict[str, Any]]  # a loader batch -> device tensors, normalised

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)
