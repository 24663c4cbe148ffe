"""Losses are computed in float32 when the network runs in half precision (AMP).

Log-softmax, cross-entropy and log-distances lose too many bits in float16/bfloat16; float32
inputs are left alone and float64 stays float64 (gradient checks run in double).
"""

from __future__ import annotations

import torch


def upcast(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 -> float32; any other dtype unchanged."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t
