"""Atomic checkpoints with everything an exact resume needs, and the teacher export.

A checkpoint is written to ``<name>.tmp`` and renamed with ``os.replace``: a process killed
mid-write leaves the previous checkpoint intact, never half a file. It holds the student,
teacher, heads and centres (one module state), optimizer, grad scaler, step, data position,
the Python/numpy/torch RNG states and the config, so a resumed run continues bit-for-bit.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


def save_checkpoint(
    ckpt_dir: str | Path, step: int, state: dict[str, Any], keep: int = 2, rng: list[dict[str, Any]] | None = None
) -> Path:
    """Write ``step_<N>.pt`` and prune all but the newest ``keep``.

    ``rng``: one RNG state per rank (default: this process's only); resume picks its own.
    """
    ckpt_dir = Path(ckpt_dir)
    state = {**state, "step": step, "rng": rng if rng is not None else [rng_state()]}
    path = save_atomic(state, ckpt_dir / f"step_{step:08d}.pt")
    for old in list_checkpoints(ckpt_dir)[:-max(1, keep)]:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (``.tmp`` leftovers of a killed write are ignored)."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in ckpt_dir.iterdir() if (m := CKPT_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1] if ckpts else None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # name the file: a corrupt checkpoint is otherwise a riddle
        raise RuntimeError(f"cannot read checkpoint {path}: {exc}") from exc


def export_teacher(backbone: nn.Module, out_dir: str | Path, arch: dict[str, Any]) -> Path:
    """Minimal export (``teacher_backbone.pt`` state dict + ``teacher_backbone.json``), plus the
    timm-loadable folder ``teacher/`` from ``dermino.models.weights.export_backbone``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    save_atomic(sd, out_dir / "teacher_backbone.pt")
    spec = getattr(backbone, "spec", None)
    meta = {"arch": arch, "spec": spec.__dict__ if spec is not None else None}
    (out_dir / "teacher_backbone.json").write_text(json.dumps(meta, indent=2, default=str))
    try:
        from dermino.models.weights import export_backbone
    except ImportError:  # optional: the minimal export above is always there
        return out_dir / "teacher_backbone.pt"
    export_backbone(backbone, out_dir / "teacher")
    return out_dir / "teacher"
