"""One vector per image from a backbone's ``forward_features`` output (CLS, mean of patches, or both)."""

from __future__ import annotations

import torch


def pool_features(out: object, pool: str) -> torch.Tensor:
    """Turn a backbone's ``forward_features`` output into one vector per image."""
    if isinstance(out, torch.Tensor):  # a backbone that only returns a pooled vector
        if pool != "cls":
            raise ValueError(f"pool={pool!r} needs patch tokens but the backbone returns one vector")
        return out
    if not isinstance(out, dict) or "cls" not in out:
        raise TypeError("forward_features must return a tensor or a dict with 'cls' (and 'patch')")
    if pool == "cls":
        return out["cls"]
    if "patch" not in out or out["patch"] is None:
        raise ValueError(f"pool={pool!r} needs patch tokens but the backbone returned none")
    mean = out["patch"].mean(1)
    return mean if pool == "mean" else torch.cat([out["cls"], mean], dim=1)
