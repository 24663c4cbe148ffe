"""Knowledge-loss inputs for pretraining: the class list, per-row targets and prototypes W.

Three prototype sources (``losses.knowledge.prototypes``): a safetensors file written by
``dermino knowledge build`` (with ``losses.knowledge.vocabulary`` naming its vocabulary, so
labels are normalised the same way), ``"text"`` (embed the manifest's own class names with the
offline text encoder: the zero-setup default), or ``"random"`` (fixed random unit vectors:
fast tests, and an ablation of the text knowledge itself).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from torch import Tensor

from dermino.data.datasets import label_classes
from dermino.pretrain.config import KnowledgeLossConfig

log = logging.getLogger(__name__)


def _load_prototype_file(path: Path) -> Tensor:
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"losses.knowledge.prototypes: file not found: {path}")
    tensors = load_file(str(path))
    if "prototypes" in tensors:
        return tensors["prototypes"].float()
    if len(tensors) == 1:
        return next(iter(tensors.values())).float()
    raise ValueError(f"{path}: expected a 'prototypes' tensor, found {sorted(tensors)}")


class _NoSimilarity:
    """A stand-in text encoder whose names are all unrelated: merging by normalisation only
    (``prototypes="random"`` runs, which have no text knowledge to merge by)."""

    name = "none (normalisation only)"
    dim = 0

    def encode(self, texts):  # noqa: ANN001, ANN201 - the TextEncoder protocol
        import numpy as np

        return np.eye(len(texts), dtype=np.float32)


def merged_vocabulary(df: pd.DataFrame, cfg: KnowledgeLossConfig, out_dir: Path | None):
    """The vocabulary ``dermino knowledge build`` would make from these rows, saved for review.

    No run trains on raw unmerged names: without ``losses.knowledge.vocabulary`` the names are
    normalised and merged here, ``vocabulary.csv`` is written into the run folder and every
    merge is logged.
    """
    from dermino.knowledge.encoder import load_text_encoder
    from dermino.knowledge.names import collect_names
    from dermino.knowledge.vocabulary import build_vocabulary

    counts, sources = collect_names([df])
    if not counts:
        raise ValueError("knowledge loss enabled but the manifests have no labels; set losses.knowledge.enabled=false")
    encoder = _NoSimilarity() if cfg.prototypes == "random" else load_text_encoder()
    vocab = build_vocabulary(list(counts), encoder, threshold=cfg.merge_threshold, sources=sources, counts=counts)
    renamed = [(v, e.name) for e in vocab.entries for v in e.variants]
    log.info("knowledge vocabulary: %d label spellings -> %d classes (merge threshold %.2f, %s)",
             len(counts), len(vocab), cfg.merge_threshold, vocab.encoder)
    for raw, name in renamed:
        log.info("  normalised %r -> %r", raw, name)
    for e in vocab.merges():
        log.info("  merged %r -> %r (cosine %.3f)", e.name, e.canonical, e.similarity)
    if out_dir is not None:
        path = vocab.save(Path(out_dir) / "vocabulary.csv")
        log.info("wrote %s for review (pass it back as losses.knowledge.vocabulary after editing)", path)
    return vocab


def knowledge_inputs(
    df: pd.DataFrame, cfg: KnowledgeLossConfig, seed: int = 0, out_dir: Path | None = None
) -> tuple[list[str], Tensor, Tensor, Tensor]:
    """``(classes, targets (N, C), label_mask (N, C), prototypes (C, E))`` for the manifest rows."""
    from dermino.knowledge.targets import encode_manifest_targets
    from dermino.knowledge.vocabulary import Vocabulary

    if not label_classes(df):
        raise ValueError("knowledge loss enabled but the manifests have no labels; set losses.knowledge.enabled=false")
    vocab = Vocabulary.load(cfg.vocabulary) if cfg.vocabulary else merged_vocabulary(df, cfg, out_dir)
    classes = list(vocab.canonical)
    targets, mask = encode_manifest_targets(df, vocab)
    if not classes:
        raise ValueError("knowledge loss enabled but the manifests have no labels; set losses.knowledge.enabled=false")
    if cfg.vocabulary and cfg.prototypes not in ("random", "text"):
        # the file records its class order: checked against the (possibly hand-edited) vocabulary
        from dermino.knowledge.prototypes import load_prototypes

        protos = load_prototypes(cfg.prototypes, vocab).float()
    elif cfg.prototypes == "random":
        g = torch.Generator().manual_seed(seed)
        protos = torch.nn.functional.normalize(torch.randn(len(classes), 64, generator=g), dim=1)
    elif cfg.prototypes == "text":
        from dermino.knowledge.encoder import load_text_encoder

        protos = torch.from_numpy(load_text_encoder(pooling=cfg.pooling).encode(classes)).float()
    else:
        protos = _load_prototype_file(Path(cfg.prototypes))
    if protos.shape[0] != len(classes):
        raise ValueError(
            f"prototypes have {protos.shape[0]} rows but there are {len(classes)} classes "
            f"(set losses.knowledge.vocabulary to the vocabulary the prototypes were built from)"
        )
    labelled = int((mask.sum(1) > 0).sum())
    log.info("knowledge loss: %d classes, %d/%d rows labelled", len(classes), labelled, len(df))
    return classes, targets.float(), mask.float(), protos


def text_source(cfg: KnowledgeLossConfig) -> tuple[str, str]:
    """(encoder, pooling) that made the prototypes: what zero-shot needs to embed new names alike."""
    from dermino.knowledge.encoder import DEFAULT_ENCODER

    if cfg.prototypes == "random":
        return "random", ""
    if cfg.prototypes == "text":
        return DEFAULT_ENCODER, cfg.pooling
    from dermino.knowledge.prototypes import prototype_pooling, read_prototypes

    _, _, encoder = read_prototypes(cfg.prototypes)
    return encoder or DEFAULT_ENCODER, prototype_pooling(cfg.prototypes)


def export_knowledge_head(head: torch.nn.Module, prototypes: Tensor, classes: list[str],
                          cfg: KnowledgeLossConfig, out_dir: Path) -> Path:
    """Write the student's knowledge head next to the exported teacher (for ``dermino zero-shot``)."""
    from dermino.models.knowledge_heads import HEAD_FILE, save_head

    encoder, pooling = text_source(cfg)
    path = save_head(head, Path(out_dir) / HEAD_FILE, prototypes,  # type: ignore[arg-type]
                     {"classes": classes, "encoder": encoder, "pooling": pooling})
    log.info("knowledge head exported to %s", path)
    return path
