"""What to extract: the embedding settings every command shares (size, pooling, batching, cache)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from dermino.config import AtLeast1, Device

POOLS = ("cls", "mean", "cls+mean", "proj")


@dataclass
class EmbedConfig:
    image_size: int = 224  # center-crop side; must be a multiple of the patch size
    resize: int = 0  # shorter side before cropping; 0 = image_size (no border lost)
    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    # mean: of patch tokens; cls+mean: concatenated; proj: the image embedding a vision-language
    # model scores against its text tower (the model's own retrieval projection)
    pool: Literal["cls", "mean", "cls+mean", "proj"] = "cls"
    batch_size: Annotated[int, AtLeast1] = 64
    num_workers: int = 0
    chunk_size: Annotated[int, AtLeast1] = 1024  # rows per cached chunk (a crash loses at most one)
    cache_dir: str = ""  # "": <output folder>/cache when the command has one, else $DERMINO_CACHE/embeddings
    image_cache: str = ""  # folder from `dermino data cache`: read pre-resized images from it
    device: Annotated[str, Device()] = "cpu"
