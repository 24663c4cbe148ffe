"""Atomic checkpoints with everything an exact resume needs, and the teacher export.

A checkpoint is written to a hidden temporary sibling and renamed over the target
(``dermino.files.save_atomic``): a process killed mid-write leaves the previous checkpoint intact,
never half a file. Everything in it is a tensor or a plain value, so it loads with
``weights_only=True`` and a crafted file cannot run code on ``--resume``. It holds the student,
teacher, heads and centres (one module state), optimizer, grad scaler, step, data position,
the Python/numpy/torch RNG states and the config, so a resumed run continues bit-for-bit.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dermino.files import UnsafeFileError, load_torch, save_atomic, write_text_atomic

__all__ = [
    "CKPT_RE", "UnsafeFileError", "export_teacher", "latest_checkpoint", "list_checkpoints", "load_checkpoint",
    "plain", "rng_state", "save_atomic", "save_checkpoint", "set_rng_state",
]

CKPT_RE = re.compile(r"^step_(\d+)\.pt$")


def rng_state() -> dict[str, Any]:
    """Every RNG state as tensors and plain values (so a checkpoint loads with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    if isinstance(npy, dict):
        keys = npy["keys"].cpu().numpy().astype(np.uint32)
        np.random.set_state((npy["kind"], keys, npy["pos"], npy["has_gauss"], npy["cached"]))
    else:  # checkpoints written before the numpy state was stored as a tensor
        np.random.set_state(npy)
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def plain(obj: Any) -> Any:
    """numpy scalars / arrays -> Python numbers / tensors, recursively, so the file loads with
    ``weights_only=True`` (schedules are numpy arrays, so optimizer lrs easily become np.float64)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(obj.copy())
    return obj


def save_checkpoint(
    ckpt_dir: str | Path, step: int, state: dict[str, Any], keep: int = 2, rng: list[dict[str, Any]] | None = None,
    protect: str | Path | None = None,
) -> Path:
    """Write ``step_<N>.pt`` and prune all but the newest ``keep`` (never ``protect``: the last
    checkpoint from before a divergence, kept in addition to the rolling ones).

    ``rng``: one RNG state per rank (default: this process's only); resume picks its own.
    """
    ckpt_dir = Path(ckpt_dir)
    state = plain({**state, "step": step, "rng": rng if rng is not None else [rng_state()]})
    path = save_atomic(state, ckpt_dir / f"step_{step:08d}.pt")
    keep_name = Path(protect).name if protect is not None else None
    for old in list_checkpoints(ckpt_dir)[:-max(1, keep)]:
        if old.name != keep_name:
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
    """Tensors and plain values only (``weights_only=True``): a crafted checkpoint cannot run code.

    Any failure (corrupt, truncated, or a pickle of arbitrary objects) is an
    :class:`~dermino.files.UnsafeFileError` naming the file.
    """
    state = load_torch(path, map_location=map_location, what="checkpoint")
    if not isinstance(state, dict) or "model" not in state:
        raise UnsafeFileError(f"{path} is not a dermino pretraining checkpoint (no 'model' entry)")
    return state


def export_teacher(backbone: nn.Module, out_dir: str | Path, arch: dict[str, Any]) -> Path:
    """Minimal export (``teacher_backbone.pt`` state dict + ``teacher_backbone.json``), plus the
    timm-loadable folder ``teacher/`` from ``dermino.models.weights.export_backbone``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}
    save_atomic(sd, out_dir / "teacher_backbone.pt")
    spec = getattr(backbone, "spec", None)
    meta = {"arch": arch, "spec": spec.__dict__ if spec is not None else None}
    write_text_atomic(out_dir / "teacher_backbone.json", json.dumps(meta, indent=2, default=str))
    try:
        from dermino.models.weights import export_backbone
    except ImportError:  # optional: the minimal export above is always there
        return out_dir / "teacher_backbone.pt"
    export_backbone(backbone, out_dir / "teacher")
    return out_dir / "teacher"
