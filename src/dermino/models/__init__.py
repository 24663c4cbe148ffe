"""Backbones (timm ViTs with a mask token), projection heads and weight loading."""

from dermino.models.backbone import create, list_backbones, register

__all__ = ["create", "list_backbones", "register"]
