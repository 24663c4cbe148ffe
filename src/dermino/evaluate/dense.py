"""Dense linear probe: how linearly a frozen backbone's PATCH features separate lesion from skin.

The pretraining monitor asks this at every monitor step, and ``dermino segment`` with
``linear_fit: ridge`` fits its linear head with it, so the two report the same Dice on the same
data. To be a monitor the fit must be cheap and free of training noise, so it is closed-form:

* features: the normalised patch tokens of one block (the last by default) as a (D, h, w) map
  per image, the image resized (bilinear) to the model size;
* targets: the lesion fraction of each patch (the mask resized to the model size with nearest
  neighbour, then averaged over each patch);
* fit: ridge regression of the lesion fraction on the standardised features (penalty ``ridge``
  per sample, intercept unpenalised), solved in float64;
* prediction: lesion where ``w·x + b > 0.5``. The score map is upsampled bilinearly to the model
  size and then to the mask's original size, as ``dermino segment`` upsamples its logits, and
  scored with the lesion Dice of :mod:`dermino.evaluate.segmentation` (mean over images).

A ridge regression on fractions is not the cross-entropy + Dice training of the SGD linear head;
it is the deterministic member of the same family (one linear map of each patch feature).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dermino.data.masks import Pair, model_input, resized_pair
from dermino.evaluate import segmentation as M

DEFAULT_RIDGE = 1e-2  # per sample, on standardised features (their Gram matrix has a unit diagonal)


@dataclass
class DenseProbe:
    """Lesion score of a patch feature ``x``: ``weight · x + bias`` (a lesion fraction; > 0.5 = lesion)."""

    weight: torch.Tensor  # (D,) float64, on the raw (not standardised) features
    bias: float
    layer: int  # the backbone block whose patch tokens it reads

    def lesion_logit(self, features: torch.Tensor) -> torch.Tensor:
        """(B, D, h, w) maps -> (B, h, w) scores minus 0.5 (positive = lesion)."""
        w = self.weight.to(features.device, torch.float32)
        return torch.einsum("bdhw,d->bhw", features.float(), w) + (self.bias - 0.5)


@torch.no_grad()
def patch_maps(backbone: nn.Module, images: torch.Tensor, layer: int) -> torch.Tensor:
    """(B, D, h, w) normalised patch tokens of block ``layer`` (eval mode, no gradients)."""
    was_training = backbone.training
    backbone.eval()
    try:
        return backbone.get_intermediate_layers(images, [layer])[0].float()
    finally:
        backbone.train(was_training)


def lesion_fractions(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(N, H, W) 0/1 masks -> (N, h, w) share of lesion pixels under each patch."""
    return F.adaptive_avg_pool2d(masks.float()[:, None], grid)[:, 0]


def fit_ridge(features: torch.Tensor, fractions: torch.Tensor, ridge: float = DEFAULT_RIDGE, layer: int = -1) -> DenseProbe:
    """Ridge regression of ``fractions`` (N, h, w) on ``features`` (N, D, h, w), one row per patch."""
    if features.shape[0] != fractions.shape[0] or features.shape[-2:] != fractions.shape[-2:]:
        raise ValueError(f"features {tuple(features.shape)} and targets {tuple(fractions.shape)} do not match")
    d = features.shape[1]
    x = features.permute(0, 2, 3, 1).reshape(-1, d).double()
    y = fractions.reshape(-1).double()
    n = x.shape[0]
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    y_mean = y.mean()
    gram = z.T @ z / n + ridge * torch.eye(d, dtype=torch.float64)
    w_std = torch.linalg.solve(gram, z.T @ (y - y_mean) / n)
    weight = w_std / std
    return DenseProbe(weight=weight, bias=float(y_mean - (mean * weight).sum()), layer=layer)


def _batches(pairs: Sequence[Pair], batch_size: int) -> list[Sequence[Pair]]:
    return [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]


def fit_dense_probe(
    backbone: nn.Module,
    pairs: Sequence[Pair],
    size_hw: tuple[int, int],
    layer: int = -1,
    ridge: float = DEFAULT_RIDGE,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> DenseProbe:
    """Fit the probe on ``pairs`` (images and masks at ``size_hw``)."""
    if len(pairs) < 1:
        raise ValueError("the dense probe needs at least one image with a mask to fit")
    feats, targets = [], []
    for chunk in _batches(pairs, batch_size):
        loaded = [resized_pair(p, size_hw, backbone.mean, backbone.std) for p in chunk]
        x = torch.stack([t for t, _ in loaded]).to(device)
        f = patch_maps(backbone, x, layer).cpu()
        masks = torch.from_numpy(np.stack([m for _, m in loaded]))
        feats.append(f)
        targets.append(lesion_fractions(masks, tuple(f.shape[-2:])))
    return fit_ridge(torch.cat(feats), torch.cat(targets), ridge, layer)


@torch.no_grad()
def probe_counts(
    backbone: nn.Module,
    probe: DenseProbe,
    pairs: Sequence[Pair],
    size_hw: tuple[int, int],
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """``(N, 4)`` lesion counts [tp, fp, fn, tn] of the probe's masks, at each mask's original size."""
    out = np.zeros((len(pairs), 4), dtype=np.int64)
    row = 0
    for chunk in _batches(pairs, batch_size):
        loaded = [model_input(p, size_hw, backbone.mean, backbone.std) for p in chunk]
        x = torch.stack([t for t, _ in loaded]).to(device)
        score = probe.lesion_logit(patch_maps(backbone, x, probe.layer))[:, None]
        score = F.interpolate(score, size=tuple(size_hw), mode="bilinear", align_corners=False)
        for i, (_, mask) in enumerate(loaded):
            up = F.interpolate(score[i : i + 1], size=mask.shape, mode="bilinear", align_corners=False)
            out[row] = M.counts(up[0, 0].cpu().numpy() > 0, mask)
            row += 1
    return out


def dense_dice(
    backbone: nn.Module,
    fit_pairs: Sequence[Pair],
    score_pairs: Sequence[Pair],
    size_hw: tuple[int, int],
    layer: int = -1,
    ridge: float = DEFAULT_RIDGE,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
) -> float:
    """Mean per-image lesion Dice on ``score_pairs`` of the probe fitted on ``fit_pairs``."""
    probe = fit_dense_probe(backbone, fit_pairs, size_hw, layer, ridge, batch_size, device)
    return M.mean_per_image(probe_counts(backbone, probe, score_pairs, size_hw, batch_size, device), "dice")
