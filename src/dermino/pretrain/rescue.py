"""Rescue from a diverged run, and strict resume.

Divergence: while a streak of non-finite steps is going on, the rolling checkpoints keep being
written, so with ``keep_checkpoints=2`` the last checkpoint from *before* the streak would be
pruned. The trainer remembers the last *healthy* checkpoint (``last_good``) and the pruning never
deletes it; when the guard gives up, :func:`diverged_message` names it and the command that
resumes from it with a lower learning rate. Healthy (:class:`Health`) means more than "the loss
was finite": a divergence usually starts with a spike (the loss or the gradient norm jumps to
many times its recent level, the weights grow by orders of magnitude) several steps before the
first NaN, and a checkpoint written after the spike diverges again when resumed. So a checkpoint
is healthy when its weights are finite and no step read since the previous checkpoint had a
non-finite or spiking loss or gradient norm.

Strict resume: a checkpoint is only continued by the same recipe. :func:`config_changes` lists
the keys whose values differ from the saved config, minus the ones that cannot change the
trajectory (logging, checkpoint cadence, monitoring); a resume refuses them unless each is
allowed explicitly (``--allow-config-change KEY``). ``--resume-from PATH`` (the rescue) allows the
learning-rate keys by itself.
"""

from __future__ import annotations

import math
import shutil
import statistics
from collections import deque
from pathlib import Path
from typing import Any

from dermino.pretrain.checkpoint import CKPT_RE, list_checkpoints

# keys that change what is logged or saved, never the weights a step produces
SAFE_TO_CHANGE = (
    "run.out_dir", "run.progress", "run.tensorboard", "run.log_every", "run.checkpoint_every",
    "run.keep_checkpoints", "run.max_bad_steps", "run.monitor_every", "run.peak_tflops", "run.threads",
    "data.monitor_train", "data.monitor_val", "data.monitor_size",
)
# what ``--resume-from`` (the rescue after a divergence) may change without being asked
RESCUE_KEYS = ("optim.base_lr", "optim.min_lr")


class ResumeError(ValueError):
    """A resume that would silently continue a different run."""


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: list(d) if isinstance(d, tuple) else d}


def _covered(key: str, allowed: tuple[str, ...] | list[str]) -> bool:
    return any(key == a or key.startswith(a + ".") for a in allowed)


def config_changes(saved: dict[str, Any], requested: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (saved, requested)}`` for every trajectory-relevant difference."""
    a, b = _flatten(saved), _flatten(requested)
    return {
        k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and not _covered(k, SAFE_TO_CHANGE)
    }


def check_resume_config(
    saved: dict[str, Any], requested: dict[str, Any], allowed: list[str] | tuple[str, ...], checkpoint: Path
) -> dict[str, tuple[Any, Any]]:
    """Raise :class:`ResumeError` listing the differing keys not in ``allowed``; return the allowed ones."""
    changes = config_changes(saved, requested)
    refused = {k: v for k, v in changes.items() if not _covered(k, allowed)}
    if refused:
        lines = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in refused.items())
        raise ResumeError(
            f"refusing to resume {checkpoint} with a different config ({lines}). These change the training "
            f"trajectory; resume with the saved config, or allow them explicitly: "
            f"--allow-config-change {' '.join(refused)}"
        )
    return changes


def set_aside_later(ckpt_dir: Path, step: int) -> list[Path]:
    """Move checkpoints newer than ``step`` into ``checkpoints/diverged/`` (kept, never deleted),
    so a later plain ``--resume`` does not pick a checkpoint from the diverged branch."""
    moved = []
    for p in list_checkpoints(ckpt_dir):
        m = CKPT_RE.match(p.name)
        if m and int(m.group(1)) > step:
            dest = ckpt_dir / "diverged" / p.name
            dest.parent.mkdir(exist_ok=True)
            shutil.move(str(p), dest)
            moved.append(dest)
    return moved


def lower_lr(base_lr: float, min_lr: float = 0.0) -> str:
    """The ``optim.*`` overrides of a rescue: a quarter of the learning rate, always finite and
    positive, and ``min_lr`` lowered with it when it would exceed the new rate (the config
    check ``min_lr <= base_lr`` would refuse the suggested command otherwise)."""
    from dermino.pretrain.config import OptimConfig

    default = OptimConfig()
    if not (math.isfinite(base_lr) and base_lr > 0):
        base_lr = default.base_lr
    lower = float(f"{base_lr / 4:.3g}")
    out = f"optim.base_lr={lower:.3g}"
    if math.isfinite(min_lr) and min_lr > lower:
        out += f" optim.min_lr={lower / 10:.3g}"
    elif not math.isfinite(min_lr):
        out += f" optim.min_lr={min(default.min_lr, lower):.3g}"
    return out


def diverged_message(reason: str, out_dir: Path, good: Path | None, base_lr: float, min_lr: float = 0.0) -> str:
    """One line: what happened, the checkpoint to go back to, and the command that does it."""
    lower = lower_lr(base_lr, min_lr)
    cmd = f"dermino pretrain --config {out_dir / 'config.yaml'} --out {out_dir}"
    if good is None or not good.is_file():
        return (f"{reason}; no checkpoint was written before the divergence: restart with a lower learning rate, "
                f"e.g. `{cmd}.restart {lower}`")
    return (f"{reason}; last good checkpoint: {good} (the last one written while training was healthy: finite weights, no NaN or spike); resume from it "
            f"with a lower learning rate: `{cmd} --resume-from {good} {lower}`")


class Health:
    """Spike detector over the steps whose values are read (every step, or every ``log_every``).

    A value is unhealthy when it is not finite, or when its magnitude exceeds ``factor`` times the
    median magnitude of the last ``window`` values (once ``min_history`` values are known). The
    first unhealthy step since the last checkpoint is remembered until :meth:`checkpoint` asks.
    """

    def __init__(self, window: int = 50, factor: float = 10.0, min_history: int = 2):
        self.factor, self.min_history = factor, min_history
        self.history: dict[str, deque[float]] = {"loss": deque(maxlen=window), "grad_norm": deque(maxlen=window)}
        self.problem: str | None = None

    def observe(self, step: int, values: dict[str, float]) -> str | None:
        """Record one step's ``loss`` and ``grad_norm``; the reason when they are unhealthy."""
        why = None
        for name, hist in self.history.items():
            if name not in values:
                continue
            v = float(values[name])
            if not math.isfinite(v):
                why = why or f"step {step}: {name} is {v}"
                continue
            if len(hist) >= self.min_history:
                med = statistics.median(abs(h) for h in hist)
                if med > 0 and abs(v) > self.factor * med:
                    why = why or f"step {step}: {name} {v:.4g} is over {self.factor:g}x its running median {med:.4g}"
            hist.append(v)
        if why and self.problem is None:
            self.problem = why
        return why

    def checkpoint(self, weights_finite: bool) -> str | None:
        """Why the checkpoint being written now is not healthy (None: it is); resets the window."""
        why = self.problem if weights_finite else "non-finite weights"
        self.problem = None
        return why
