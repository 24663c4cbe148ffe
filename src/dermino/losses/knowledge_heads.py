"""Deprecated location: the knowledge heads moved to :mod:`dermino.models.knowledge_heads`
(beside the DINO/iBOT heads; the loss that trains them stays in :mod:`dermino.losses.knowledge`)."""

from __future__ import annotations

import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    import dermino.models.knowledge_heads as moved

    if hasattr(moved, name):
        warnings.warn(f"dermino.losses.knowledge_heads.{name} moved to dermino.models.knowledge_heads.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(moved, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
