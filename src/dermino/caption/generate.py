"""Captions for images: frozen features once per image, then greedy or beam-search decoding.

The encoder is frozen, so an image's features never change: training and generation both
encode each image once (batched, with the encoder's own test-time transform) and feed the
projector from those features.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from dermino.caption.model import Captioner
from dermino.data.images import IMAGE_EXTENSIONS, read_rgb
from dermino.features import EmbedConfig, eval_transform
from dermino.features.cache import CACHE_VERSION, model_hash, rows_hash
from dermino.files import atomic_path
from dermino.progress import tqdm

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def feature_key(captioner: Captioner, paths: Sequence[Path], image_size: int) -> str:
    """What makes two encodings the same: encoder tensors, images (path, size, mtime), transform, tokens."""
    enc = captioner.encoder
    transform = eval_transform(enc, EmbedConfig(image_size=image_size))
    blob = json.dumps({"v": CACHE_VERSION, "kind": "caption-image-tokens", "model": model_hash(enc),
                       "rows": rows_hash(paths), "transform": transform.params(),
                       "tokens": captioner.spec.image_tokens, "grid": captioner.spec.patch_grid}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@torch.no_grad()
def encode_paths(captioner: Captioner, paths: Sequence[Path], image_size: int, batch_size: int = 32,
                 progress: bool = True, cache_dir: str | Path = "") -> torch.Tensor:
    """``(N, K, D)`` frozen image features on the CPU (``(N, 0, 1)`` for the LM alone).

    With ``cache_dir`` the features are read from (or written to) ``<cache_dir>/<key>.npy``, the
    key naming the encoder's tensors, the images and the transform: the encoder is frozen, so a
    second training run or an evaluation never encodes the same images again.
    """
    if not captioner.uses_image:
        return torch.zeros(len(paths), 0, 1)
    path = None
    if str(cache_dir):
        path = Path(cache_dir) / f"{feature_key(captioner, paths, image_size)}.npy"
        if path.is_file():
            log.info("caption features: %d images from the cache %s", len(paths), path)
            return torch.from_numpy(np.load(path, allow_pickle=False))
    feats = _encode(captioner, paths, image_size, batch_size, progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, feats.numpy())
    return feats


def _encode(captioner: Captioner, paths: Sequence[Path], image_size: int, batch_size: int,
            progress: bool) -> torch.Tensor:
    enc = captioner.encoder
    transform = eval_transform(enc, EmbedConfig(image_size=image_size))
    device = next(enc.parameters()).device
    chunks = []
    for i in tqdm(range(0, len(paths), batch_size), desc="encode images", disable=not progress, leave=False):
        x = torch.stack([transform(read_rgb(p)) for p in paths[i : i + batch_size]]).to(device)
        chunks.append(captioner.encode_images(x).float().cpu())
    return torch.cat(chunks) if chunks else torch.zeros(0, captioner.n_image_tokens, int(enc.embed_dim))


def generate_captions(captioner: Captioner, features: torch.Tensor, batch_size: int = 16, max_new_tokens: int = 64,
                      num_beams: int = 1, progress: bool = True) -> list[str]:
    """One caption per feature row (greedy when ``num_beams == 1``)."""
    out: list[str] = []
    n = features.shape[0]
    for i in tqdm(range(0, n, batch_size), desc="generate", disable=not progress, leave=False):
        feats = features[i : i + batch_size]
        out += captioner.generate(feats if captioner.uses_image else None, batch=feats.shape[0],
                                  max_new_tokens=max_new_tokens, num_beams=num_beams)
    return out


def expand_images(items: Sequence[str | Path]) -> list[Path]:
    """Image files, and the images inside folders (sorted); a missing path is an error."""
    paths: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            paths += sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTENSIONS)
        elif p.is_file():
            paths.append(p)
        else:
            raise FileNotFoundError(f"image or folder not found: {p}")
    if not paths:
        raise FileNotFoundError(f"no images found in {', '.join(map(str, items))}")
    return paths


def caption_images(captioner: Captioner, images: Sequence[str | Path], image_size: int, out_csv: str | Path | None = None,
                   max_new_tokens: int = 64, num_beams: int = 1, batch_size: int = 16,
                   progress: bool = True) -> list[tuple[Path, str]]:
    """Caption image files or folders; optionally write ``image,caption`` rows to a CSV."""
    paths = expand_images(images)
    feats = encode_paths(captioner, paths, image_size, progress=progress)
    texts = generate_captions(captioner, feats, batch_size, max_new_tokens, num_beams, progress)
    pairs = list(zip(paths, texts, strict=True))
    if out_csv is not None:
        out = Path(out_csv)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "caption"])
            w.writerows((str(p), t) for p, t in pairs)
        tmp.replace(out)
    return pairs
