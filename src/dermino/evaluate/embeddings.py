"""Deprecated location: the feature library moved to :mod:`dermino.features`.

``from dermino.evaluate.embeddings import X`` still works for every name it used to export,
with a DeprecationWarning that names the new module.
"""

from __future__ import annotations

import warnings
from typing import Any

_NAMES = {
    "POOLS", "CACHE_VERSION", "EmbedConfig", "EvalTransform", "eval_transform", "file_hash", "model_hash",
    "image_paths", "rows_hash", "resolve_cache_dir", "cache_key", "pool_features", "Embeddings",
    "extract_embeddings",
}


def __getattr__(name: str) -> Any:
    if name in _NAMES:
        warnings.warn(f"dermino.evaluate.embeddings.{name} moved to dermino.features.{name}",
                      DeprecationWarning, stacklevel=2)
        import dermino.features as features

        return getattr(features, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
