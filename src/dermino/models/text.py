"""The text side of a vision-language backbone, as zero-shot and image-text retrieval see it.

A backbone with a text tower sets ``model.text_tower`` to an object with this interface and
returns its joint-space image embedding under ``"proj"`` in ``forward_features`` (pool
``proj``). Zero-shot then scores ``logit_scale * cos(image proj, encode(prompt))`` for every
class, with the model's own tokenizer and prompt template, from the same prompts file that
dermino's knowledge head reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class TextTower(Protocol):
    #: how a class name becomes a prompt, e.g. "a dermoscopic image of {}."; "{}" is the name
    template: str
    #: the model's learned temperature (exp of its logit scale); 1.0 where it has none
    logit_scale: float

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, D) float32, L2-normalised, in the same space as the image's ``proj`` embedding."""
        ...


def text_tower(model: nn.Module) -> TextTower | None:
    """The model's text tower, or None for an image-only backbone."""
    tower = getattr(model, "text_tower", None)
    return tower if isinstance(tower, TextTower) else None
