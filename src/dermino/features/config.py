"""What to extract: the embedding settings every command shares (size, pooling, batching, cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from dermino.config import AtLeast1, Device

POOLS = ("cls", "mean", "cls+mean", "proj", "auto")


@dataclass
class EmbedConfig:
    image_size: int = 224  # center-crop side; must be a multiple of the patch size
    resize: int = 0  # shorter side before cropping; 0 = image_size (no border lost)
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    # mean: of patch tokens; cls+mean: concatenated; proj: the image embedding a vision-language
    # model scores against its text tower (the model's own retrieval projection)
    # auto: the feature the model's publisher reports (a baseline's ``preprocess.pool``), else cls
    pool: Literal["cls", "mean", "cls+mean", "proj", "auto"] = "cls"
    # model: a baseline with its own published preprocessing (models/preprocess.py) gets exactly
    # that (its resolution, resize rule, crop, mean/std); config: image_size/resize/interpolation here
    preprocess: Literal["model", "config"] = "model"
    batch_size: Annotated[int, AtLeast1] = 64
    num_workers: int = 0
    chunk_size: Annotated[int, AtLeast1] = 1024  # rows per cached chunk (a crash loses at most one)
    cache_dir: str = ""  # "": <output folder>/cache when the command has one, else $DERMINO_CACHE/embeddings
    image_cache: str = ""  # folder from `dermino data cache`: read pre-resized images from it
    device: Annotated[str, Device()] = "cpu"
