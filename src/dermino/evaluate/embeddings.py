"""Extract frozen-backbone features for a manifest once, and cache them on disk.

Every protocol (kNN, linear, few-shot, fairness) reads the same features, so they are
computed once per (model, images, transform) and reused. The cache key hashes

* the model: the weights file's bytes when a file is given, else the state dict tensors,
* the manifest rows used: resolved image path, file size and modification time, in order,
* the test-time transform and the pooling (all recorded in ``meta.json`` beside the data).

Extraction writes one ``.npy`` per chunk of rows as soon as the chunk is complete (atomic
rename), so a crash loses at most the chunk in progress and a rerun resumes from there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from dermino.config import AtLeast1, Device
from dermino.data.images import read_rgb
from dermino.data.manifest import resolve
from dermino.files import atomic_path, cache_root
from dermino.progress import tqdm

log = logging.getLogger(__name__)

POOLS = ("cls", "mean", "cls+mean")
CACHE_VERSION = 1


@dataclass
class EmbedConfig:
    image_size: int = 224  # center-crop side; must be a multiple of the patch size
    resize: int = 0  # shorter side before cropping; 0 = image_size (no border lost)
    interpolation: str = "bicubic"
    pool: Literal["cls", "mean", "cls+mean"] = "cls"  # mean: of patch tokens; cls+mean: concatenated
    batch_size: Annotated[int, AtLeast1] = 64
    num_workers: int = 0
    chunk_size: Annotated[int, AtLeast1] = 1024  # rows per cached chunk (a crash loses at most one)
    cache_dir: str = ""  # "": <output folder>/cache when the command has one, else $DERMINO_CACHE/embeddings
    image_cache: str = ""  # folder from `dermino data cache`: read pre-resized images from it
    device: Annotated[str, Device()] = "cpu"


@dataclass(frozen=True)
class EvalTransform:
    """Resize the shorter side, center crop, scale to [0, 1], normalise.

    The cost is bounded by the crop, not by the image: when resizing the whole image would
    make it large (a thin 1 x 100,000 strip scaled up to ``resize`` on its short side would
    need gigabytes), only the box of the original that the crop covers is resampled
    (``source_box``). Ordinary images take the exact resize-then-crop path.
    """

    image_size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"

    def _resized(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """(resized width, height, crop left, crop top) of the resize-then-crop recipe."""
        w, h = size
        scale = self.resize / min(w, h)
        nw, nh = max(self.image_size, round(w * scale)), max(self.image_size, round(h * scale))
        return nw, nh, (nw - self.image_size) // 2, (nh - self.image_size) // 2

    def source_box(self, size: tuple[int, int]) -> tuple[float, float, float, float]:
        """The box of an image of ``size`` (left, top, right, bottom, original pixels) that the crop covers."""
        w, h = size
        nw, nh, left, top = self._resized(size)
        sx, sy, s = nw / w, nh / h, self.image_size
        return left / sx, top / sy, (left + s) / sx, (top + s) / sy

    def __call__(self, img: Image.Image) -> torch.Tensor:
        nw, nh, left, top = self._resized(img.size)
        resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}[self.interpolation]
        s = self.image_size
        if nw * nh <= 4 * s * s:
            img = img.resize((nw, nh), resample).crop((left, top, left + s, top + s))
        else:  # same pixels up to rounding, at the cost of the crop only
            img = img.resize((s, s), resample, box=self.source_box(img.size))
        arr = np.asarray(img, dtype=np.float32) / 255.0
        t = torch.from_numpy(arr).permute(2, 0, 1)
        mean = torch.tensor(self.mean).view(3, 1, 1)
        std = torch.tensor(self.std).view(3, 1, 1)
        return (t - mean) / std

    def params(self) -> dict:
        return asdict(self)


def eval_transform(model: torch.nn.Module, cfg: EmbedConfig) -> EvalTransform:
    """The test-time transform for ``model``: its own mean/std, image size checked against its patch."""
    patch = int(getattr(model, "patch_size", 1) or 1)
    if cfg.image_size % patch:
        raise ValueError(f"image_size {cfg.image_size} is not a multiple of the patch size {patch}")
    if cfg.interpolation not in ("bicubic", "bilinear", "nearest"):
        raise ValueError(f"interpolation must be bicubic/bilinear/nearest, got {cfg.interpolation!r}")
    mean = tuple(float(v) for v in getattr(model, "mean", (0.485, 0.456, 0.406)))
    std = tuple(float(v) for v in getattr(model, "std", (0.229, 0.224, 0.225)))
    return EvalTransform(cfg.image_size, cfg.resize or cfg.image_size, mean, std, cfg.interpolation)


class _ImageRows(Dataset):
    def __init__(self, paths: Sequence[Path], transform: EvalTransform, reader: Callable[[Path], Image.Image] = read_rgb):
        self.paths, self.transform, self.reader = list(paths), transform, reader

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.reader(self.paths[i])), i


# ---------------------------------------------------------------- hashing
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | Path) -> str:
    """sha256 of a file's bytes (memoised on path, size and mtime)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def model_hash(model: torch.nn.Module, weights: str | Path | None = None) -> str:
    """Hash of the weights file when given, else of every state-dict tensor (name, shape, bytes)."""
    if weights:
        return "file:" + file_hash(weights)
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return "state:" + h.hexdigest()


def image_paths(df: pd.DataFrame) -> list[Path]:
    paths = []
    for i, cell in enumerate(df["image"].tolist()):
        p = resolve(df, cell)
        if p is None:
            raise ValueError(f"manifest row {i}: empty 'image' cell")
        paths.append(p)
    return paths


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


# ---------------------------------------------------------------- extraction
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
) -> Embeddings:
    """Features for every row of ``df`` (in order), from the cache when possible.

    ``weights`` (the checkpoint file the model was loaded from) makes the cache key cheap
    and exact; without it the state dict is hashed.
    """
    cfg = cfg or EmbedConfig()
    if cfg.pool not in POOLS:
        raise ValueError(f"pool must be one of {POOLS}, got {cfg.pool!r}")
    if len(df) == 0:
        raise ValueError("extract_embeddings: the manifest has no rows")
    transform = eval_transform(model, cfg)
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
    folder = resolve_cache_dir(cfg.cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "version": CACHE_VERSION, "model_name": model_name, "model": model_id, "rows": rows_id,
        "n_rows": len(paths), "chunk_size": cfg.chunk_size, "pool": cfg.pool,
        "transform": transform.params(), "weights": str(weights) if weights else None,
    }
    meta_path = folder / "meta.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("chunk_size") != cfg.chunk_size:  # chunk files would not line up
            for f in folder.glob("chunk_*.npy"):
                f.unlink()
    meta_path.write_text(json.dumps(meta, indent=2))

    n_chunks = -(-len(paths) // cfg.chunk_size)
    chunk_file = lambda c: folder / f"chunk_{c:05d}.npy"  # noqa: E731
    missing = [c for c in range(n_chunks) if not chunk_file(c).exists()]
    computed = 0
    if missing:
        computed = _compute_chunks(model, paths, transform, cfg, missing, chunk_file, progress, reader)
    feats = np.concatenate([np.load(chunk_file(c)) for c in range(n_chunks)])
    if len(feats) != len(paths):
        raise RuntimeError(f"embedding cache {folder} is inconsistent: {len(feats)} rows for {len(paths)}")
    meta["dim"] = int(feats.shape[1])
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
