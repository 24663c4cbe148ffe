"""Keys of the on-disk feature cache: what makes two extractions the same.

The key hashes the model (its weights file's bytes, else its state-dict tensors), the rows
(resolved path, size and mtime of each image, in order), the transform and the pooling.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from dermino.features.transform import EvalTransform
from dermino.files import cache_root

CACHE_VERSION = 1

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | Path) -> str:
    """sha256 of a file's content (memoised on path, size and mtime).

    A ``.safetensors`` file is hashed by what it holds (sorted metadata, then each tensor's name,
    dtype, shape and bytes), not by its bytes: the writer orders the header's metadata
    differently in every process, so the same tensors saved twice are two different byte strings.
    """
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        if p.suffix == ".safetensors":
            _safetensors_content(p, h)
        else:
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def _safetensors_content(path: Path, h) -> None:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        h.update(json.dumps(f.metadata() or {}, sort_keys=True).encode())
        for name in sorted(f.keys()):
            t = f.get_tensor(name).contiguous()
            h.update(f"|{name}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def model_hash(model: torch.nn.Module, weights: str | Path | None = None) -> str:
    """Hash of the weights file when given, else of every state-dict tensor (name, shape, bytes)."""
    if weights:
        return "file:" + file_hash(weights)
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")  # 0-d too (BatchNorm counters)
    return "state:" + h.hexdigest()


def rows_hash(paths: Sequence[Path]) -> str:
    """Hash of the images used, in order: absolute path, size and mtime of each file."""
    h = hashlib.sha256()
    for i, p in enumerate(paths):
        try:
            st = p.stat()
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"manifest row {i}: image not found: {p}") from exc
        h.update(f"{os.path.abspath(p)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def resolve_cache_dir(cache_dir: str | Path = "") -> Path:
    """``cache_dir`` when set, else ``embeddings/`` under :func:`dermino.files.cache_root`."""
    return Path(cache_dir) if str(cache_dir) else cache_root() / "embeddings"


def cache_key(model_id: str, rows_id: str, transform: EvalTransform, pool: str) -> str:
    blob = json.dumps(
        {"v": CACHE_VERSION, "model": model_id, "rows": rows_id, "transform": transform.params(), "pool": pool},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]
