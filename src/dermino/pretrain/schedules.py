"""Per-step schedules (learning rate, weight decay, teacher momentum and temperature).

Each schedule is a plain numpy array indexed by the optimizer step, computed once up front:
resuming at step s reads exactly the value an uninterrupted run would, and the endpoints
are testable without running anything.
"""

from __future__ import annotations

import math

import numpy as np


def cosine_schedule(
    start: float, end: float, total_steps: int, warmup_steps: int = 0, warmup_start: float = 0.0
) -> np.ndarray:
    """Linear warm-up ``warmup_start -> start`` over ``warmup_steps``, then cosine ``start -> end``.

    ``out[0]`` is ``warmup_start`` (or ``start`` without warm-up) and ``out[-1]`` is ``end``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    warmup_steps = min(max(0, warmup_steps), total_steps)
    warm = np.linspace(warmup_start, start, warmup_steps, endpoint=False)
    n = total_steps - warmup_steps
    if n == 1:
        cos = np.array([end], dtype=float)
    else:
        t = np.arange(n) / max(1, n - 1)
        cos = end + 0.5 * (start - end) * (1 + np.cos(math.pi * t))
    return np.concatenate([warm, cos]).astype(np.float64)


def warmup_then_constant(start: float, end: float, total_steps: int, warmup_steps: int) -> np.ndarray:
    """Linear ``start -> end`` over ``warmup_steps`` then flat at ``end`` (teacher temperature)."""
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    warmup_steps = min(max(0, warmup_steps), total_steps)
    warm = np.linspace(start, end, warmup_steps) if warmup_steps > 1 else np.full(warmup_steps, end)
    return np.concatenate([warm, np.full(total_steps - warmup_steps, end)]).astype(np.float64)


def scaled_lr(base_lr: float, global_batch: int, reference: int = 1024) -> float:
    """DINOv2's square-root scaling rule: ``base_lr * sqrt(batch / 1024)``."""
    return base_lr * math.sqrt(global_batch / reference)
