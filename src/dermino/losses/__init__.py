"""DermINO losses, one per file: image-level DINO (Eq. 1-3), patch-level iBOT (Eq. 4), KoLeo,
knowledge-guided supervision (Eq. 5-7), and teacher target normalisation (Sinkhorn / centering)."""

from dermino.losses.dino import dino_loss, dino_loss_terms
from dermino.losses.ibot import ibot_loss, masked_patch_weights
from dermino.losses.knowledge import KnowledgeHead, knowledge_loss
from dermino.losses.koleo import koleo_loss
from dermino.losses.sinkhorn import CenteringSoftmax, sinkhorn_knopp

__all__ = [
    "CenteringSoftmax",
    "KnowledgeHead",
    "dino_loss",
    "dino_loss_terms",
    "ibot_loss",
    "knowledge_loss",
    "koleo_loss",
    "masked_patch_weights",
    "sinkhorn_knopp",
]
