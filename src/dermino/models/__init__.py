"""Backbones (timm ViTs with a mask token), projection heads and weight loading."""

from dermino.models.backbone import create, list_backbones, register
from dermino.models.heads import DINOHead, HeadConfig, IBOTHead, build_heads
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
