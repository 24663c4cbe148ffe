"""A backbone's own test-time preprocessing, as its publisher runs it.

Every published model was evaluated with one resize rule, crop, interpolation and
normalisation; feeding it anything else measures our pipeline, not the model. A registered
baseline carries one ``Preprocess`` as ``model.preprocess``; ``features.eval_transform`` applies
it unless the user asks for the configured size instead, and the record is written into
the embedding cache meta and every results file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

ResizeMode = Literal["shortest", "squash"]
Interpolation = Literal["bicubic", "bilinear", "nearest"]
DefaultPool = Literal["cls", "mean", "proj"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocess:
    """How one model's images are prepared: ``resize`` then a centre crop of ``image_size``.

    ``resize_mode``: ``shortest`` scales the shorter side to ``resize`` keeping the aspect
    ratio (torchvision ``Resize(int)``: the longer side is truncated, not rounded) and then
    centre-crops ``image_size``; ``squash`` resizes to ``resize x resize`` ignoring the aspect
    ratio (SigLIP, Hugging Face image processors), then crops (a no-op when equal).
    ``pool`` is the feature the publisher reports for this model (``proj`` for the
    joint image-text embedding of a vision-language model).
    """

    image_size: int
    resize: int
    resize_mode: ResizeMode = "shortest"
    interpolation: Interpolation = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    pool: DefaultPool = "cls"
    source: str = ""  # where the publisher defines it (file or library call), for the reader

    def __post_init__(self) -> None:
        if self.resize < self.image_size:
            raise ValueError(f"resize {self.resize} is smaller than the crop {self.image_size}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("mean and std need three channels")

    def params(self) -> dict:
        """A JSON-ready dict (for cache meta and results files)."""
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d


def crop_pct(image_size: int, pct: float) -> int:
    """timm's eval resize for a crop fraction: ``floor(image_size / crop_pct)`` (transforms_factory)."""
    import math

    return int(math.floor(image_size / pct))
