"""One vector per image from a backbone's ``forward_features`` output.

``cls``, ``mean`` (of the patch tokens), ``cls+mean`` (concatenated), or ``proj``: the joint
image-text embedding that a vision-language backbone returns under ``"proj"`` (what its own
zero-shot and retrieval score against the text tower).
"""

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
    if pool == "auto":
        raise ValueError("pool='auto' is resolved against the model first (features.transform.resolve_pool)")
    if pool == "cls":
        return out["cls"]
    if pool == "proj":
        if out.get("proj") is None:
            raise ValueError("pool='proj' needs a vision-language backbone (forward_features returned no 'proj')")
        return out["proj"]
    if "patch" not in out or out["patch"] is None:
        raise ValueError(f"pool={pool!r} needs patch tokens but the backbone returned none")
    mean = out["patch"].mean(1)
    return mean if pool == "mean" else torch.cat([out["cls"], mean], dim=1)
