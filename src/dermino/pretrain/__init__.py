"""dermino.pretrain: hybrid self-supervised + knowledge-guided pretraining (``pretrain(cfg) -> Path``)."""

from __future__ import annotations

from typing import Any

__all__ = ["PretrainConfig", "pretrain"]


def __getattr__(name: str) -> Any:
    # lazy: ``dermino --help`` imports dermino.commands.pretrain and should not pay for torch/timm
    if name == "pretrain":
        from dermino.pretrain.trainer import pretrain

        return pretrain
    if name == "PretrainConfig":
        from dermino.pretrain.config import PretrainConfig

        return PretrainConfig
    raise AttributeError(name)
