"""Backbones (timm ViTs with a mask token), projection heads and weight loading.

Importing the package registers every backbone (backbone.py: dermino ViTs; baselines/: the
comparators, one file per library family, each with its published preprocessing record
(preprocess.py) and model card) in the leaf registry, then ``create`` builds any of them by name.
"""

from dermino.models import backbone, baselines  # noqa: F401  (they register their backbones)
from dermino.models.factory import create
from dermino.models.heads import DINOHead, HeadConfig, IBOTHead, build_heads
from dermino.models.preprocess import Preprocess
from dermino.models.registry import list_backbones, register
from dermino.models.weights import (
    WeightsError,
    export_backbone,
    export_dinov2,
    load_exported,
    load_weights,
    to_dinov2_state_dict,
)

__all__ = [
    "DINOHead",
    "HeadConfig",
    "IBOTHead",
    "Preprocess",
    "WeightsError",
    "build_heads",
    "create",
    "export_backbone",
    "export_dinov2",
    "list_backbones",
    "load_exported",
    "load_weights",
    "register",
    "to_dinov2_state_dict",
]
