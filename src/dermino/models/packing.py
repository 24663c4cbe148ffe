"""Packing crops of different sizes into one token batch, with a block-diagonal attention mask.

Why: DINOv2 runs the global crops (16 x 16 patches at 224 px) and the local crops (7 x 7 at
98 px) of a step through the backbone as one packed forward: one set of large matmuls instead
of two, and half the kernel launches. Here every row of the packed batch is as long as the
longest crop; a shorter crop shares a row with others of its size (five 50-token local crops
fill a 257-token row but for 7 padding tokens). A boolean mask lets each token attend only to
the tokens of its own crop; padding tokens form a block of their own (a query with no key
would give NaN) and are dropped when unpacking. Dense SDPA with a mask computes the whole
row's scores, so attention costs more than for separate forwards (rows x L^2 instead of the
sum of N^2); the linear layers, the bulk of a ViT's FLOPs, see only the few padding tokens extra.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Packing:
    """Where each group of crops sits in the packed batch."""

    groups: list[tuple[int, int, int, int]]  # (crops, tokens per crop, crops per row, rows) per group
    mask: Tensor  # (rows, 1, L, L) bool: True where a query may attend to a key
    crop_of_token: Tensor  # (rows, L) int64: the crop (numbered across groups) of each token; pad: -1
    n_crops: int


def pack(token_groups: list[Tensor]) -> tuple[Tensor, Packing]:
    """``[(B_i, N_i, D), ...]`` -> ``(rows, L, D)`` with ``L = max N_i`` and the packing record."""
    if not token_groups:
        raise ValueError("nothing to pack")
    length = max(t.shape[1] for t in token_groups)
    dim, ref = token_groups[0].shape[2], token_groups[0]
    rows, masks, owners, groups = [], [], [], []
    first_crop = 0
    for tokens in token_groups:
        b, n, d = tokens.shape
        if d != dim:
            raise ValueError(f"cannot pack token widths {dim} and {d}")
        per_row = length // n
        n_rows = -(-b // per_row)
        spare = n_rows * per_row - b
        if spare:
            tokens = torch.cat([tokens, tokens.new_zeros(spare, n, d)])
        x = tokens.reshape(n_rows, per_row * n, d)
        pad = length - per_row * n
        if pad:
            x = torch.cat([x, x.new_zeros(n_rows, pad, d)], dim=1)
        rows.append(x)
        # block id of each position in a row: crop slot 0..per_row-1, padding per_row
        slot = torch.arange(per_row, device=ref.device).repeat_interleave(n)
        slot = torch.cat([slot, torch.full((pad,), per_row, device=ref.device)])
        masks.append((slot[:, None] == slot[None, :]).expand(n_rows, 1, length, length))
        crop = first_crop + torch.arange(n_rows, device=ref.device)[:, None] * per_row + slot[None, :]
        crop = torch.where((slot[None, :] == per_row) | (crop >= first_crop + b), -1, crop)
        owners.append(crop)
        groups.append((b, n, per_row, n_rows))
        first_crop += b
    mask = torch.cat(masks)
    return torch.cat(rows), Packing(groups, mask, torch.cat(owners), first_crop)


def unpack(x: Tensor, packing: Packing) -> list[Tensor]:
    """Inverse of :func:`pack` for the per-token output: ``[(B_i, N_i, D), ...]``."""
    out, start = [], 0
    for b, n, per_row, n_rows in packing.groups:
        part = x[start : start + n_rows, : per_row * n]
        out.append(part.reshape(n_rows * per_row, n, x.shape[-1])[:b])
        start += n_rows
    return out


def crop_drop_scale(packing: Packing, drop_prob: float, dtype: torch.dtype) -> Tensor:
    """Stochastic depth per *crop* (as unpacked): a ``(rows, L, 1)`` scale of 0 or 1 / keep."""
    keep = 1.0 - drop_prob
    if keep <= 0:
        return packing.mask.new_zeros(packing.crop_of_token.shape, dtype=dtype).unsqueeze(-1)
    kept = torch.empty(packing.n_crops + 1, device=packing.mask.device, dtype=dtype).bernoulli_(keep) / keep
    kept[-1] = 0.0  # padding tokens (index -1) carry nothing forward
    return kept[packing.crop_of_token].unsqueeze(-1)
