"""What every baseline wrapper shares: the mask-token guard, plain strict loading, model cards.

A ``Card`` is what ``dermino backbones`` lists and what a user needs to reproduce a
comparison: which library builds the model, which published file to download and from
where, its licence, the sha256 its publisher states (full, or the prefix torchvision and
Meta put in file names), and whether its text tower works offline. Cards are plain data:
``register_baseline`` files one beside the constructor in the leaf registry's name space.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from torch import Tensor, nn

from dermino.models.preprocess import Preprocess
from dermino.models.registry import register

log = logging.getLogger(__name__)

Library = Literal["torchvision", "timm", "open_clip", "transformers", "dermino"]
Status = Literal["ready", "unreleased"]


@dataclass(frozen=True)
class Card:
    """Facts about one registered comparator (shown by ``dermino backbones``, docs/baselines.md)."""

    name: str
    family: str  # e.g. "CLIP", "DINOv3", "PanDerm"
    library: Library
    arch: str  # the library's own name for the architecture
    hub_id: str  # for users online (HF hub id, torch hub URL or library tag)
    download: str  # the page or URL of the published weights file
    files: tuple[str, ...]  # file name(s) as published
    licence: str
    paper: str = ""
    sha256: str = ""  # as the publisher states it: full hex digest or a file-name prefix
    text_tower: bool = False  # a working text tower offline (tokenizer shipped in an installed package)
    text_note: str = ""  # why there is none, or which tokenizer / template
    note: str = ""  # faithfulness caveats: converters, closest maintained implementation
    status: Status = "ready"
    preprocess: Preprocess | None = None  # the record the built model carries as ``model.preprocess``

    def params(self) -> dict:
        d = asdict(self)
        d["files"] = list(self.files)
        d["preprocess"] = self.preprocess.params() if self.preprocess else None
        return d


CARDS: dict[str, Card] = {}


def register_baseline(card: Card, tiny: dict | None = None) -> Callable:
    """``@register_baseline(Card(...))``: register the constructor under ``card.name`` and file its card."""

    def deco(fn: Callable) -> Callable:
        CARDS[card.name] = card
        return register(card.name, tiny=tiny)(fn)

    return deco


def add_card(card: Card) -> None:
    """A card without a constructor: a model announced but not loadable (``status='unreleased'``)."""
    CARDS[card.name] = card


def get_card(name: str) -> Card | None:
    return CARDS.get(name)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def check_published_sha256(name: str, path: str | Path) -> bool | None:
    """Warn when a weights file's sha256 differs from the one its publisher states.

    Returns True (matches), False (differs: warned) or None (the publisher states none).
    A prefix (torchvision ``-8ba56ff5.pth``, DINOv3 file names) is compared as a prefix.
    """
    card = CARDS.get(name)
    if card is None or not card.sha256:
        return None
    digest = sha256_of(path)
    if digest.startswith(card.sha256.lower()):
        return True
    warnings.warn(
        f"{path}: sha256 {digest[:16]}... differs from the {name} file its publisher states "
        f"({card.sha256}); features will not be comparable with published numbers",
        stacklevel=3,
    )
    return False


def no_masks(masks: Tensor | None, name: str) -> None:
    if masks is not None:
        raise ValueError(f"{name} has no mask token: masked inputs are only for dermino ViTs")


def load_plain(module: nn.Module, sd: dict[str, Tensor], drop: Sequence[str]) -> tuple[list, list, list]:
    """``load_state_dict(strict=False)`` after dropping (and reporting) keys under ``drop`` prefixes."""
    ignored = [k for k in sd if k.startswith(tuple(drop))]
    result = module.load_state_dict({k: v for k, v in sd.items() if k not in ignored}, strict=False)
    return list(result.missing_keys), list(result.unexpected_keys), ignored


def tokens_to_map(tokens: Tensor, h: int, w: int) -> Tensor:
    """(B, h*w, C) patch tokens -> (B, C, h, w), the layout ``get_intermediate_layers`` returns."""
    return tokens.reshape(tokens.shape[0], h, w, -1).permute(0, 3, 1, 2).contiguous()
