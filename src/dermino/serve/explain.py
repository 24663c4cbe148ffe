"""Where the model looked: last-layer CLS attention per head (DINO) and attention rollout.

* ``cls``: the class token's attention to each patch in the last block, one map per head
  (Caron et al. 2021 show these heads segment objects without supervision).
* ``rollout``: attention averaged over heads, plus identity for the residual path,
  re-normalised and multiplied through all blocks (Abnar & Zuidema 2020): how much each
  patch contributes to the final class token, across depth.

Attention weights are recomputed from each block's input with the block's own q/k
projections (forward pre-hooks), so the fused attention kernel used for inference stays.
Maps cover the centre crop the model saw; ``overlay`` places them on the original image.
"""

from __future__ import annotations

import io
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from dermino.features import EvalTransform

Method = Literal["cls", "rollout"]


def _blocks_and_prefix(backbone: nn.Module) -> tuple[list[nn.Module], int, int]:
    vit = getattr(backbone, "vit", backbone)
    blocks = list(getattr(vit, "blocks", []))
    if not blocks or not all(hasattr(b, "attn") and hasattr(b.attn, "qkv") for b in blocks):
        raise ValueError(f"{type(backbone).__name__} has no ViT attention blocks: attention maps need a ViT")
    return blocks, int(getattr(vit, "num_prefix_tokens", 1)), int(getattr(backbone, "patch_size", 14))


def _attention(attn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, N) softmax attention of a timm ``Attention`` for its input ``x``."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


@torch.inference_mode()
def attention_maps(backbone: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """``{"cls": (B, heads, h, w), "rollout": (B, h, w)}`` for a preprocessed batch ``x``."""
    blocks, prefix, patch = _blocks_and_prefix(backbone)
    gh, gw = x.shape[-2] // patch, x.shape[-1] // patch
    captured: list[torch.Tensor] = []
    hooks = [b.attn.register_forward_pre_hook(lambda m, args: captured.append(_attention(m, args[0])))
             for b in blocks]
    try:
        backbone.forward_features(x)
    finally:
        for h in hooks:
            h.remove()
    last = captured[-1]
    cls = last[:, :, 0, prefix:].reshape(x.shape[0], -1, gh, gw)
    n = last.shape[-1]
    eye = torch.eye(n, dtype=last.dtype)
    rollout = eye.expand(x.shape[0], n, n).clone()
    for a in captured:
        a = a.mean(1) + eye
        a = a / a.sum(-1, keepdim=True)
        rollout = a @ rollout
    roll = rollout[:, 0, prefix:].reshape(x.shape[0], gh, gw)
    return {"cls": cls, "rollout": roll}


def select_map(maps: dict[str, torch.Tensor], method: Method, head: int | None = None) -> np.ndarray:
    """One (h, w) map of the first image: a head of ``cls`` (mean of heads when None), or rollout."""
    if method == "rollout":
        return maps["rollout"][0].float().numpy()
    if method != "cls":
        raise ValueError(f"method must be 'cls' or 'rollout', got {method!r}")
    cls = maps["cls"][0]
    if head is None:
        return cls.mean(0).float().numpy()
    if not 0 <= head < cls.shape[0]:
        raise ValueError(f"head must be in [0, {cls.shape[0]}), got {head}")
    return cls[head].float().numpy()


def crop_box(transform: EvalTransform, size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The box of the original image (left, top, right, bottom) that the centre crop covers."""
    return transform.crop_box(size)


def _pixel_span(lo: float, hi: float, n: int) -> tuple[int, int]:
    """Integer [start, stop) inside [0, n) covering [lo, hi), at least one pixel wide (thin images)."""
    start = min(max(0, round(lo)), n - 1)
    return start, min(n, max(start + 1, round(hi)))


def overlay(image: Image.Image, heat: np.ndarray, box: tuple[float, float, float, float] | None = None,
            alpha: float = 0.5) -> Image.Image:
    """Colour-mapped ``heat`` (min-max scaled) blended onto ``image`` inside ``box``; outside dimmed."""
    from matplotlib import colormaps

    box = box or (0, 0, image.width, image.height)
    left, right = _pixel_span(box[0], box[2], image.width)
    top, bottom = _pixel_span(box[1], box[3], image.height)
    h = np.asarray(heat, dtype=np.float64)
    h = (h - h.min()) / (h.max() - h.min()) if h.max() > h.min() else np.zeros_like(h)
    hm = Image.fromarray((h * 255).astype(np.uint8)).resize((right - left, bottom - top), Image.BILINEAR)
    rgb = (colormaps["inferno"](np.asarray(hm) / 255.0)[..., :3] * 255).astype(np.float32)
    pixels = np.asarray(image.convert("RGB"))
    base = pixels.astype(np.float32) * 0.45  # outside the crop: dimmed
    region = pixels[top:bottom, left:right].astype(np.float32)
    base[top:bottom, left:right] = (1 - alpha) * region + alpha * rgb
    return Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))


def explain_image(
    backbone: nn.Module, transform: EvalTransform, image: Image.Image, method: Method = "rollout",
    head: int | None = None,
) -> tuple[Image.Image, np.ndarray, int]:
    """(overlay image, the (h, w) map, number of heads) for one RGB image."""
    device = next(backbone.parameters()).device
    maps = attention_maps(backbone, transform(image).unsqueeze(0).to(device))
    heat = select_map(maps, method, head)
    return overlay(image, heat, crop_box(transform, image.size)), heat, int(maps["cls"].shape[1])


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()
