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

from dermino.data.datasets import encode_label_targets, label_classes
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


def knowledge_inputs(
    df: pd.DataFrame, cfg: KnowledgeLossConfig, seed: int = 0
) -> tuple[list[str], Tensor, Tensor, Tensor]:
    """``(classes, targets (N, C), label_mask (N, C), prototypes (C, E))`` for the manifest rows."""
    if cfg.vocabulary:
        from dermino.knowledge.targets import encode_manifest_targets
        from dermino.knowledge.vocabulary import Vocabulary

        vocab = Vocabulary.load(cfg.vocabulary)
        classes = list(vocab.canonical)
        targets, mask = encode_manifest_targets(df, vocab)
    else:
        classes = label_classes(df)
        targets, mask = encode_label_targets(df, classes)
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

        protos = torch.from_numpy(load_text_encoder().encode(classes)).float()
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
