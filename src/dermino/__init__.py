"""dermino: build, adapt, evaluate and deploy dermatology foundation models."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def __getattr__(name: str) -> Any:
    # ``dermino.load`` imports torch and the model registry: only when first used, so
    # ``import dermino`` stays cheap for tools that read results files.
    if name in ("load", "Model"):
        from dermino import api

        return getattr(api, name)
    raise AttributeError(f"module 'dermino' has no attribute {name!r}")
