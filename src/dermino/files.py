"""Atomic writes and safe loading: the two rules every file the project touches follows.

A write goes to a temporary sibling, is flushed and fsynced, then renamed over the target, so
a process killed mid-write leaves the previous file intact, never half a file. A load of a
torch file only ever unpickles tensors and plain types (``weights_only=True``): files we read
are data, and a crafted checkpoint must not be able to run code.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch


class UnsafeFileError(ValueError):
    """A file could not be read as plain data (corrupt, or holding objects that could run code)."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # keep the real suffix last so writers that pick the format by suffix (np.save, to_parquet) still work
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if tmp.exists():
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it takes ``path``'s place.

    For outputs that are a folder of files read together (a classifier, an index): a crash while
    writing leaves the previous folder (or none), never a mix of old and new files.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        old = path.with_name(f"{path.name}.old{os.getpid()}")
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically. Save only tensors and plain types so :func:`load_torch` can read it."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
    return Path(path)


def load_torch(path: str | Path, map_location: str | torch.device = "cpu", what: str = "file") -> Any:
    """``torch.load(weights_only=True)``; any failure is one error that names the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a pickle with arbitrary objects, a truncated file, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeFileError(
            f"cannot read {what} {path}: it is corrupt or holds more than tensors and plain values "
            f"(refused to unpickle arbitrary objects: {first})"
        ) from exc


def load_safetensors(path: str | Path, what: str = "file") -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file``; a corrupt or foreign file is one error that names it."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return load_file(str(path))
    except Exception as exc:  # SafetensorError for a truncated file, a pickle renamed .safetensors, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnsafeFileError(f"cannot read {what} {path}: not a valid safetensors file ({first})") from exc


def cache_root() -> Path:
    """Where caches go when no output folder is given: ``$DERMINO_CACHE``, else the platform's
    user cache folder (``$XDG_CACHE_HOME``/``~/.cache`` on Linux, ``~/Library/Caches`` on macOS,
    ``%LOCALAPPDATA%`` on Windows) + ``dermino``. Never the current directory."""
    env = os.environ.get("DERMINO_CACHE")
    if env:
        return Path(env).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "dermino"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "dermino" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dermino"
