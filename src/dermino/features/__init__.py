"""The one feature library: embedding settings, test-time transform, pooling, extraction, caches.

Everything that turns images into frozen-backbone features (evaluation protocols, the
classifier, the service, captioning, federated sites, de-duplication, ``dermino.load``) goes
through here, so one image under one model and transform is embedded once.
"""

from dermino.features.cache import (
    CACHE_VERSION,
    cache_key,
    file_hash,
    model_hash,
    resolve_cache_dir,
    rows_hash,
)
from dermino.features.config import POOLS, EmbedConfig
from dermino.features.extract import Embeddings, extract_embeddings, image_paths
from dermino.features.memory import MemoryTier, memory_tier
from dermino.features.pooling import pool_features
from dermino.features.transform import EvalTransform, eval_transform, model_preprocess, resolve_pool

__all__ = [
    "CACHE_VERSION", "POOLS", "EmbedConfig", "Embeddings", "EvalTransform", "MemoryTier", "cache_key",
    "eval_transform", "extract_embeddings", "file_hash", "image_paths", "memory_tier", "model_hash", "model_preprocess",
    "pool_features", "resolve_cache_dir", "resolve_pool", "rows_hash",
]
