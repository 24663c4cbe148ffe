"""Extract frozen-backbone features for a manifest once, and cache them on disk.

Every protocol (kNN, linear, few-shot, fairness) reads the same features, so they are
computed once per (model, images, transform) and reused. The cache key hashes

* the model: the weights file's bytes when a file is given, else the state dict tensors,
* the manifest rows used: resolved image path, file size and modification time, in order,
* the test-time transform and the pooling (all recorded in ``meta.json`` beside the data).

Extraction writes one ``.npy`` per chunk of rows as soon as the chunk is complete (atomic
rename), so a crash loses at most the chunk in progress and a rerun resumes from there.
Under torchrun the chunks are shared out by number (``dermino.sharding``): each rank computes
its own, and every rank then reads all of them, so the array is the single-process one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dermino.data.images import read_rgb
from dermino.data.manifest import resolve
from dermino.features.cache import CACHE_VERSION, cache_key, model_hash, resolve_cache_dir, rows_hash
from dermino.features.config import POOLS, EmbedConfig
from dermino.features.pooling import pool_features
from dermino.features.transform import EvalTransform, eval_transform, model_preprocess, resolve_pool
from dermino.files import atomic_path
from dermino.progress import tqdm
from dermino.sharding import Shard

log = logging.getLogger(__name__)


def image_paths(df: pd.DataFrame) -> list[Path]:
    paths = []
    for i, cell in enumerate(df["image"].tolist()):
        p = resolve(df, cell)
        if p is None:
            raise ValueError(f"manifest row {i}: empty 'image' cell")
        paths.append(p)
    return paths


class _ImageRows(Dataset):
    def __init__(self, paths: Sequence[Path], transform: EvalTransform, reader: Callable[[Path], Image.Image] = read_rgb):
        self.paths, self.transform, self.reader = list(paths), transform, reader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.reader(self.paths[i])), i


@dataclass
class Embeddings:
    features: np.ndarray  # (N, D) float32, aligned with the manifest rows given
    key: str
    path: Path  # cache folder
    meta: dict
    computed_rows: int  # rows computed by this call (0 = fully cached)


def _save_atomic(path: Path, arr: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr)


def extract_embeddings(
    model: torch.nn.Module,
    df: pd.DataFrame,
    cfg: EmbedConfig | None = None,
    *,
    weights: str | Path | None = None,
    model_name: str = "",
    progress: bool = True,
    shard: Shard | None = None,
) -> Embeddings:
    """Features for every row of ``df`` (in order), from the cache when possible.

    ``weights`` (the checkpoint file the model was loaded from) makes the cache key cheap
    and exact; without it the state dict is hashed. With a ``shard`` of several processes
    (every rank calls this with the same arguments) each rank computes only the missing
    chunks it owns; all ranks return the whole array, and ``computed_rows`` counts the rows
    computed by all ranks together. Only rank 0 writes ``meta.json``.
    """
    cfg = cfg or EmbedConfig()
    shard = shard or Shard()
    if cfg.pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {cfg.pool!r}")
    if len(df) == 0:
        raise ValueError("extract_embeddings: the manifest has no rows")
    transform = eval_transform(model, cfg)
    pool = resolve_pool(model, cfg.pool)
    if pool != cfg.pool:  # key and compute with the concrete pooling ('auto' -> the model's own)
        from dataclasses import replace

        cfg = replace(cfg, pool=pool)
    paths = image_paths(df)
    model_id = model_hash(model, weights)
    rows_id = rows_hash(paths)
    reader: Callable[[Path], Image.Image] = read_rgb
    if cfg.image_cache:  # other pixels than the originals: other embeddings, other cache key
        from dermino.data.cache import open_for_rows

        image_cache = open_for_rows(cfg.image_cache, paths, "evaluation")
        rows_id = hashlib.sha256(f"{rows_id}|image-cache:{image_cache.identity}".encode()).hexdigest()
        reader = image_cache
        if image_cache.size < transform.resize:
            log.warning("image cache %s stores %d px images but evaluation resizes to %d px: the images are "
                        "upsampled; build the cache with --size >= %d", cfg.image_cache, image_cache.size,
                        transform.resize, transform.resize)
    key = cache_key(model_id, rows_id, transform, cfg.pool)
    shard.agree(key, "embedding cache key (model, rows, transform, pooling)")
    folder = resolve_cache_dir(cfg.cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "version": CACHE_VERSION, "model_name": model_name, "model": model_id, "rows": rows_id,
        "n_rows": len(paths), "chunk_size": cfg.chunk_size, "pool": cfg.pool,
        "transform": transform.params(), "weights": str(weights) if weights else None,
        "preprocessing": model_preprocess(model),
    }
    meta_path = folder / "meta.json"
    if shard.is_main:  # the others wait below until the folder is settled
        if meta_path.exists():
            old = json.loads(meta_path.read_text())
            if old.get("chunk_size") != cfg.chunk_size:  # chunk files would not line up
                for f in folder.glob("chunk_*.npy"):
                    f.unlink()
        meta_path.write_text(json.dumps(meta, indent=2))
    shard.barrier()

    n_chunks = -(-len(paths) // cfg.chunk_size)
    chunk_file = lambda c: folder / f"chunk_{c:05d}.npy"  # noqa: E731
    missing = [c for c in range(n_chunks) if shard.owns(c) and not chunk_file(c).exists()]
    computed = 0
    if missing:
        computed = _compute_chunks(model, paths, transform, cfg, missing, chunk_file,
                                   progress and shard.is_main, reader)
    computed = shard.total(computed)  # returns once every rank has written its chunks
    absent = [c for c in range(n_chunks) if not chunk_file(c).exists()]
    if absent:  # only possible when ranks do not share the folder
        raise RuntimeError(f"embedding cache {folder}: chunk(s) {absent[:5]} written by other ranks are not "
                           "there; under torchrun on several nodes the cache folder must be on a "
                           "filesystem every node sees (set cache_dir)")
    feats = np.concatenate([np.load(chunk_file(c)) for c in range(n_chunks)])
    if len(feats) != len(paths):
        raise RuntimeError(f"embedding cache {folder} is inconsistent: {len(feats)} rows for {len(paths)}")
    meta["dim"] = int(feats.shape[1])
    if shard.is_main:
        meta_path.write_text(json.dumps(meta, indent=2))
    return Embeddings(feats, key, folder, meta, computed)


def _compute_chunks(model, paths, transform, cfg, missing, chunk_file, progress, reader=read_rgb) -> int:
    """Run the model over the rows of the missing chunks; save each chunk when it is complete."""
    # batches never straddle a chunk boundary, so a chunk completes exactly at a batch end
    batches: list[list[int]] = []
    for c in missing:
        lo, hi = c * cfg.chunk_size, min(len(paths), (c + 1) * cfg.chunk_size)
        batches += [list(range(s, min(hi, s + cfg.batch_size))) for s in range(lo, hi, cfg.batch_size)]
    loader = DataLoader(
        _ImageRows(paths, transform, reader), batch_sampler=batches, num_workers=cfg.num_workers,
        persistent_workers=False, pin_memory=cfg.device.startswith("cuda"),
    )
    device = torch.device(cfg.device)
    was_training = model.training
    model.eval().to(device)
    pending: dict[int, dict[int, np.ndarray]] = {}
    total = sum(len(b) for b in batches)
    bar = tqdm(total=total, desc="embed", unit="img", disable=not progress)
    try:
        with torch.inference_mode():
            for images, idx in loader:
                out = model.forward_features(images.to(device, non_blocking=True))
                vec = pool_features(out, cfg.pool).float().cpu().numpy()
                for i, v in zip(idx.tolist(), vec, strict=True):
                    pending.setdefault(i // cfg.chunk_size, {})[i] = v
                c = idx[0].item() // cfg.chunk_size
                lo, hi = c * cfg.chunk_size, min(len(paths), (c + 1) * cfg.chunk_size)
                if len(pending[c]) == hi - lo:
                    rows = pending.pop(c)
                    _save_atomic(chunk_file(c), np.stack([rows[i] for i in range(lo, hi)]).astype(np.float32))
                bar.update(len(idx))
    finally:
        bar.close()
        model.train(was_training)
    return total
