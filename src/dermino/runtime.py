"""Process set-up shared by every job: seeding and device choice, in one place.

Each job (pretrain, segment, evaluate) seeds the same three generators and resolves
``auto | cpu | cuda | cuda:N | mps`` the same way, so an unavailable device is one clear
error naming the config key instead of a CUDA traceback deep in the first forward pass.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def device_problem(pref: str) -> str | None:
    """Why ``pref`` cannot be used on this machine (None when it can)."""
    if pref in ("auto", "cpu"):
        return None
    if pref == "cuda" or pref.startswith("cuda:"):
        if not torch.cuda.is_available():
            return f"{pref!r} requested but no CUDA GPU is available (use 'auto' or 'cpu')"
        if ":" in pref:
            try:
                index = int(pref.split(":", 1)[1])
            except ValueError:
                return f"{pref!r} is not a device (cuda:N with N an integer)"
            if index >= torch.cuda.device_count():
                return f"{pref!r} requested but only {torch.cuda.device_count()} GPU(s) are visible"
        return None
    if pref == "mps":
        mps = getattr(torch.backends, "mps", None)
        return None if mps is not None and mps.is_available() else "'mps' requested but MPS is not available"
    return f"unknown device {pref!r}: use auto, cpu, cuda, cuda:N or mps"


def pick_device(pref: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU when there is one, else CPU; others are checked to exist."""
    if pref == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    problem = device_problem(pref)
    if problem:
        raise ValueError(problem)
    if pref == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(pref)
