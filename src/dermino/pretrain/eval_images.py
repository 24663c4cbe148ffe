"""Batches of a manifest's images for the monitors, with the backbone in eval mode meanwhile.

The kNN embedding and the Gram-drift monitor read the same way: the evaluation transform
at the monitor size, batches in row order, and the backbone's train/eval mode restored after.
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import torch
from torch import nn

from dermino.data.images import read_rgb
from dermino.data.manifest import resolve
from dermino.data.transforms import eval_transform


def eval_batches(backbone: nn.Module, df: pd.DataFrame, size: int, device: torch.device,
                 batch_size: int) -> Iterator[torch.Tensor]:
    """``(B, 3, size, size)`` batches of every row of ``df``; the backbone is in eval mode while
    the caller holds a batch and back in its previous mode when the iteration ends or stops."""
    tf = eval_transform(size, mean=backbone.mean, std=backbone.std)
    was_training = backbone.training
    backbone.eval()
    paths = [resolve(df, v) for v in df["image"]]
    try:
        for i in range(0, len(paths), batch_size):
            yield torch.stack([tf(read_rgb(p)) for p in paths[i : i + batch_size]]).to(device)
    finally:
        backbone.train(was_training)
