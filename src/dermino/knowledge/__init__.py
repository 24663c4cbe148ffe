"""Label knowledge for DermINO's knowledge-guided loss: disease vocabulary, targets, prototypes W."""

from dermino.knowledge.encoder import DEFAULT_ENCODER, TextEncoder, load_text_encoder
from dermino.knowledge.prototypes import (
    load_knowledge,
    load_prototypes,
    prototype_matrix,
    save_prototypes,
)
from dermino.knowledge.targets import encode_manifest_targets, encode_targets
from dermino.knowledge.vocabulary import (
    DEFAULT_THRESHOLD,
    UnknownLabelError,
    Vocabulary,
    build_vocabulary,
)

__all__ = [
    "DEFAULT_ENCODER",
    "DEFAULT_THRESHOLD",
    "TextEncoder",
    "UnknownLabelError",
    "Vocabulary",
    "build_vocabulary",
    "encode_manifest_targets",
    "encode_targets",
    "load_knowledge",
    "load_prototypes",
    "load_text_encoder",
    "prototype_matrix",
    "save_prototypes",
]
