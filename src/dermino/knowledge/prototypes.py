"""The prototype matrix W (paper Eq. 7): one text embedding per disease class.

W_init = [E(d_1); ...; E(d_C)], the embeddings of the canonical disease names, initialises the
knowledge head so that image features are scored against *what the disease names mean*,
and related diseases start with related prototypes. W is stored next to the vocabulary as
safetensors with the class names in its metadata, so a vocabulary edited after W was built
is detected instead of silently mis-aligning rows and classes.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from torch import Tensor

from dermino.files import atomic_path
from dermino.knowledge.encoder import TextEncoder, load_text_encoder
from dermino.knowledge.vocabulary import Vocabulary

log = logging.getLogger(__name__)

TENSOR_KEY = "prototypes"
FORMAT = "dermino.prototypes/1"
VOCABULARY_FILE = "vocabulary.csv"
PROTOTYPES_FILE = "prototypes.safetensors"


def prototype_matrix(vocab: Vocabulary, encoder: TextEncoder) -> Tensor:
    """(C, E) float32: row j is the encoder's unit-norm embedding of ``vocab.canonical[j]``."""
    if len(vocab) == 0:
        raise ValueError("the vocabulary has no classes; nothing to build prototypes from")
    emb = encoder.encode(vocab.canonical)
    return torch.from_numpy(emb).float().contiguous()


def save_prototypes(path: str | Path, weight: Tensor, vocab: Vocabulary, encoder: str | None = None,
                    pooling: str = "mean") -> Path:
    """Write W with its class names, the encoder that made it and its token pooling in the metadata."""
    from safetensors.torch import save_file

    classes = vocab.canonical
    if weight.ndim != 2 or weight.shape[0] != len(classes):
        raise ValueError(f"prototypes of shape {tuple(weight.shape)} do not match {len(classes)} classes")
    path = Path(path)
    meta = {"format": FORMAT, "classes": json.dumps(classes), "encoder": encoder or vocab.encoder or "",
            "pooling": pooling}
    with atomic_path(path) as tmp:
        save_file({TENSOR_KEY: weight.detach().float().cpu().contiguous()}, str(tmp), metadata=meta)
    return path


def read_prototypes(path: str | Path) -> tuple[Tensor, list[str], str]:
    """(W, class names, encoder name) as stored in a prototypes file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prototypes file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        keys = list(f.keys())
        if TENSOR_KEY not in keys:
            raise ValueError(f"{path}: no {TENSOR_KEY!r} tensor (keys {keys}); not a dermino prototypes file")
        weight = f.get_tensor(TENSOR_KEY)
    try:
        classes = json.loads(meta.get("classes", "null"))
    except json.JSONDecodeError:
        classes = None
    if not isinstance(classes, list) or len(classes) != weight.shape[0]:
        raise ValueError(f"{path}: class names in the metadata are missing or do not match {weight.shape[0]} rows")
    return weight, [str(c) for c in classes], meta.get("encoder", "")


def prototype_pooling(path: str | Path) -> str:
    """The token pooling recorded in a prototypes file ("mean" for files written before it was)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("pooling", "mean")


def load_prototypes(path: str | Path, vocab: Vocabulary | None = None) -> Tensor:
    """W from ``path``; with ``vocab``, check its rows are the vocabulary's classes in order."""
    weight, classes, _ = read_prototypes(path)
    if vocab is not None and classes != vocab.canonical:
        raise ValueError(_mismatch(path, classes, vocab.canonical))
    return weight


def _mismatch(path: str | Path, classes: list[str], expected: list[str]) -> str:
    added = sorted(set(expected) - set(classes))
    removed = sorted(set(classes) - set(expected))
    return (
        f"{path} was built for a different vocabulary (classes added {added[:5]}, removed {removed[:5]}"
        f"{', reordered' if not added and not removed else ''}); the vocabulary was probably edited: "
        "rebuild W with `dermino knowledge prototypes --vocabulary VOCAB.csv --out DIR`"
    )


def load_knowledge(folder: str | Path, encoder: TextEncoder | str | None = "auto") -> tuple[Vocabulary, Tensor]:
    """What training reads: the (possibly hand-edited) vocabulary and its prototype matrix.

    If ``vocabulary.csv`` was edited after ``prototypes.safetensors`` was written, W is
    re-embedded from the new canonical names with ``encoder`` ("auto": the encoder recorded
    in the prototypes file; ``None``: raise instead), so a clinician's edit is always honoured.
    """
    folder = Path(folder)
    vocab = Vocabulary.load(folder / VOCABULARY_FILE)
    proto_path = folder / PROTOTYPES_FILE
    weight, classes, enc_name = read_prototypes(proto_path)
    if classes == vocab.canonical:
        return vocab, weight
    if encoder is None:
        raise ValueError(_mismatch(proto_path, classes, vocab.canonical))
    if encoder == "auto":
        if not enc_name:
            raise ValueError(_mismatch(proto_path, classes, vocab.canonical) + " (no encoder recorded in the file)")
        encoder = enc_name
    enc = load_text_encoder(encoder, pooling=prototype_pooling(proto_path)) if isinstance(encoder, str) else encoder
    log.warning("%s is out of date with %s; re-embedding %d classes with %s",
                proto_path, folder / VOCABULARY_FILE, len(vocab), getattr(enc, "name", enc))
    new = prototype_matrix(vocab, enc)
    if new.shape[1] != weight.shape[1]:
        log.warning("encoder width %d differs from the stored prototypes' %d", new.shape[1], weight.shape[1])
    return vocab, new
