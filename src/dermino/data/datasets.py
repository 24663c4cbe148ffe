"""Pretraining data: a Dataset over a manifest, a resumable weighted sampler, and the collate.

Design for exact resume: every sample carries its own seed, derived from
``(run seed, epoch, position in the epoch)`` by the sampler, and the dataset seeds torch with
it (in a forked RNG) before augmenting; the collate seeds its masking RNG from the seeds of
the samples in the batch. So a batch depends only on *where* it is in the run, not on which
worker made it or whether the process was restarted, and resuming needs just the sampler's
(epoch, position).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from dermino.data.images import ImageReadError, read_rgb
from dermino.data.manifest import resolve, split_labels
from dermino.data.masking import MaskingConfig, batch_masks

log = logging.getLogger(__name__)


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed unique to (run seed, epoch, position); stable across processes."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(2, np.uint64)[0] >> np.uint64(1))


def label_classes(df: pd.DataFrame) -> list[str]:
    """Sorted canonical names found in ``labels`` or ``label_space`` of the manifest."""
    names: set[str] = set()
    for col in ("labels", "label_space"):
        if col in df.columns:
            for cell in df[col]:
                names.update(split_labels(cell))
    return sorted(names)


def encode_label_targets(df: pd.DataFrame, classes: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-hot ``targets`` (N, C) and label-space ``mask`` (N, C) over ``classes``.

    Same convention as ``dermino.knowledge.targets``: a row is supervised only on its
    label_space (empty label_space = unsupervised row). Names outside ``classes`` are ignored.
    """
    index = {c: i for i, c in enumerate(classes)}
    n = len(df)
    targets = torch.zeros(n, len(classes))
    mask = torch.zeros(n, len(classes))
    labels = df["labels"].tolist() if "labels" in df.columns else [""] * n
    spaces = df["label_space"].tolist() if "label_space" in df.columns else [""] * n
    for i, (lab, space) in enumerate(zip(labels, spaces, strict=True)):
        own = [index[x] for x in split_labels(lab) if x in index]
        allowed = [index[x] for x in split_labels(space) if x in index]
        targets[i, own] = 1.0
        mask[i, allowed] = 1.0
    return targets, mask


class PretrainDataset(Dataset):
    """Manifest rows -> multi-crop views + knowledge targets.

    Keys are ``(row, seed)`` pairs from ``ResumableSampler`` (a plain int uses the row as seed).
    ``on_bad_image="skip"`` logs an unreadable file and substitutes another row (chosen from
    the sample's seed, so it is reproducible); ``"raise"`` propagates ``ImageReadError``.
    ``reader`` decodes a path (default the original file; ``dermino.data.cache.ImageCache``
    reads the pre-resized copy instead).
    """

    def __init__(
        self,
        df: pd.DataFrame,
        transform: Callable[[Any], dict[str, list[torch.Tensor]]],
        targets: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
        on_bad_image: Literal["raise", "skip"] = "skip",
        max_replacements: int = 50,
        reader: Callable[[Path], Any] = read_rgb,
    ):
        if on_bad_image not in ("raise", "skip"):
            raise ValueError(f"on_bad_image must be 'raise' or 'skip', got {on_bad_image!r}")
        if len(df) == 0:
            raise ValueError("pretraining manifest has no rows")
        self.paths = [resolve(df, v) for v in df["image"]]
        empty = [i for i, p in enumerate(self.paths) if p is None]
        if empty:
            raise ValueError(f"manifest rows {empty[:10]} have an empty 'image' path")
        self.transform = transform
        n = len(df)
        self.targets = targets if targets is not None else torch.zeros(n, 0)
        self.label_mask = label_mask if label_mask is not None else torch.zeros_like(self.targets)
        if len(self.targets) != n or self.label_mask.shape != self.targets.shape:
            raise ValueError(f"targets {tuple(self.targets.shape)} / mask {tuple(self.label_mask.shape)} do not match {n} rows")
        self.on_bad_image = on_bad_image
        self.max_replacements = max_replacements
        self.bad: set[int] = set()
        self.reader = reader

    def __len__(self) -> int:
        return len(self.paths)

    def _load(self, row: int, seed: int) -> tuple[int, Any]:
        rng = np.random.default_rng(seed)
        for _ in range(self.max_replacements + 1):
            if row not in self.bad:
                try:
                    return row, self.reader(self.paths[row])
                except ImageReadError as exc:
                    if self.on_bad_image == "raise":
                        raise
                    self.bad.add(row)
                    log.warning("skipping unreadable image (row %d): %s", row, exc)
            row = int(rng.integers(len(self.paths)))
        raise ImageReadError(self.paths[row], f"gave up after {self.max_replacements} unreadable replacements")

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        row, seed = (key, key) if isinstance(key, int) else (int(key[0]), int(key[1]))
        row, image = self._load(row, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            crops = self.transform(image)
        return {
            **{k: v for k, v in crops.items() if k.endswith("_photo")},
            "global": crops["global"],
            "local": crops["local"],
            "targets": self.targets[row],
            "label_mask": self.label_mask[row],
            "row": row,
            "seed": seed,
        }


class MultiCropCollate:
    """Stack samples into view-major tensors and draw the iBOT masks for the batch.

    Output: ``global_crops`` (n_g*B, 3, G, G) [view 0 of every image, then view 1],
    ``local_crops`` (n_l*B, 3, L, L) or None, ``masks`` (n_g*B, N) bool, ``targets`` and
    ``label_mask`` (B, C), ``rows`` (B,). The training step then needs no per-sample loop.
    """

    def __init__(self, patch_size: int, masking: MaskingConfig, seed: int = 0):
        self.patch_size = patch_size
        self.masking = masking
        self.seed = seed

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        n_global = len(samples[0]["global"])
        n_local = len(samples[0]["local"])
        global_crops = torch.stack([s["global"][v] for v in range(n_global) for s in samples])
        local_crops = (
            torch.stack([s["local"][v] for v in range(n_local) for s in samples]) if n_local else None
        )
        photo = {}
        if "global_photo" in samples[0]:  # photometric parameters to apply on the device, view-major too
            photo["global_photo"] = torch.stack([s["global_photo"][v] for v in range(n_global) for s in samples])
            photo["local_photo"] = (torch.stack([s["local_photo"][v] for v in range(n_local) for s in samples])
                                    if n_local else samples[0]["local_photo"])
        grid = (global_crops.shape[-2] // self.patch_size, global_crops.shape[-1] // self.patch_size)
        rng = np.random.default_rng([self.seed, *[s["seed"] for s in samples]])
        masks = batch_masks(len(global_crops), grid, self.masking, rng)
        return {
            "global_crops": global_crops,
            "local_crops": local_crops,
            "masks": masks,
            "targets": torch.stack([s["targets"] for s in samples]),
            "label_mask": torch.stack([s["label_mask"] for s in samples]),
            "rows": torch.tensor([s["row"] for s in samples]),
            "n_global": n_global,
            "n_local": n_local,
            **photo,
        }


def source_row_weights(df: pd.DataFrame, source_weights: dict[str, float] | None) -> np.ndarray | None:
    """Per-row sampling probabilities: each source gets its weight (default 1), shared by its rows.

    None when no weights are given (plain shuffling without replacement).
    """
    if not source_weights:
        return None
    sources = df["source"].astype(str).tolist() if "source" in df.columns else [""] * len(df)
    unknown = sorted(set(source_weights) - set(sources))
    if unknown:
        raise ValueError(f"source_weights names {unknown} but the manifest sources are {sorted(set(sources))}")
    counts = pd.Series(sources).value_counts().to_dict()
    w = np.array([float(source_weights.get(s, 1.0)) / counts[s] for s in sources])
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"source_weights must be >= 0 with a positive total, got {source_weights}")
    return w / w.sum()


class ResumableSampler(Sampler):
    """Yields ``(row, sample_seed)`` for one epoch of this rank, starting at ``start``.

    An epoch is ``epoch_size`` draws (default: the number of rows) shuffled with the
    (seed, epoch) RNG, or drawn with replacement from ``weights``; rank ``r`` of ``W`` takes
    every W-th draw. ``set_state(epoch, start)`` positions it (resume skips without loading).
    """

    def __init__(
        self,
        n_rows: int,
        weights: np.ndarray | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch_size: int | None = None,
    ):
        self.n_rows, self.weights, self.seed = n_rows, weights, seed
        self.rank, self.world_size = rank, world_size
        self.epoch_size = epoch_size or n_rows
        if self.epoch_size < world_size:
            raise ValueError(f"epoch of {self.epoch_size} samples is smaller than the world size {world_size}")
        self.epoch, self.start = 0, 0

    @property
    def per_rank(self) -> int:
        return self.epoch_size // self.world_size

    def set_state(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "start": self.start}

    def _order(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is None:
            reps = -(-self.epoch_size // self.n_rows)
            order = np.concatenate([rng.permutation(self.n_rows) for _ in range(reps)])[: self.epoch_size]
        else:
            order = rng.choice(self.n_rows, size=self.epoch_size, replace=True, p=self.weights)
        return order[: self.per_rank * self.world_size]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()
        for pos in range(self.start, self.per_rank):
            global_pos = pos * self.world_size + self.rank
            yield int(order[global_pos]), sample_seed(self.seed, self.epoch, global_pos)

    def __len__(self) -> int:
        return max(0, self.per_rank - self.start)
