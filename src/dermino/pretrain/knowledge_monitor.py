"""Held-out diagnostics of the knowledge head during pretraining.

The training-batch knowledge term can fall just by memorising class frequencies; what matters
is whether the head scores *unseen* images better than an image-blind predictor. Every
``losses.knowledge.heldout_every`` steps (and at the end) this embeds labelled images the run
never trains on with the teacher backbone, applies the student's knowledge head, and reports:

- ``knowledge_heldout``: the knowledge loss (Eq. 6) on those images;
- ``knowledge_heldout_prior``: ``class_prior_floor`` of the same images (the best constant
  predictor, using the held-out frequencies themselves: a strict bar);
- ``knowledge_heldout_auroc``: the head's own macro AUROC (each class over the rows whose label
  space contains it);
- ``knowledge_cos_own`` / ``knowledge_cos_other``: mean cosine between an image embedding and
  its own class prototype(s) vs the other prototypes of its label space.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dermino.data.images import read_rgb
from dermino.data.manifest import read_manifest, resolve
from dermino.data.transforms import eval_transform
from dermino.losses.knowledge import class_prior_floor, knowledge_loss

if TYPE_CHECKING:
    from dermino.knowledge.vocabulary import Vocabulary

log = logging.getLogger(__name__)

COLUMNS = ["knowledge_heldout", "knowledge_heldout_prior", "knowledge_heldout_auroc",
           "knowledge_cos_own", "knowledge_cos_other"]


def heldout_rows(manifests: list[str], splits: list[str], vocab: Vocabulary, max_images: int,
                 seed: int = 0) -> tuple[pd.DataFrame, Tensor, Tensor]:
    """Labelled rows of ``splits`` (all rows where a manifest has no such split) with their
    targets and label-space masks in the vocabulary's class order; rows whose labels the
    vocabulary does not know are dropped (and counted in the log)."""
    from dermino.knowledge.targets import encode_targets

    frames = []
    for path in manifests:
        df = read_manifest(path)
        if "split" in df.columns and splits and df["split"].isin(splits).any():
            df = df[df["split"].isin(splits)]
        df = df.assign(image=[str(resolve(df, v)) for v in df["image"]])
        frames.append(df)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["image"])
    keep, dropped = [], 0
    for i, (lab, space) in enumerate(zip(df.get("labels", [""] * len(df)), df.get("label_space", [""] * len(df)),
                                         strict=True)):
        if not isinstance(lab, str) or not lab.strip():
            continue
        try:
            encode_targets([lab], [space], vocab)
        except (KeyError, ValueError):
            dropped += 1
            continue
        keep.append(i)
    df = df.iloc[keep].reset_index(drop=True)
    if max_images and len(df) > max_images:
        df = df.sample(n=max_images, random_state=seed).reset_index(drop=True)
    if dropped:
        log.warning("knowledge held-out: %d row(s) dropped (labels outside the run's vocabulary)", dropped)
    if len(df) == 0:
        raise ValueError(f"losses.knowledge.heldout: no labelled rows in splits {splits} of {manifests}")
    targets, mask = encode_targets(df["labels"].tolist(), df.get("label_space", pd.Series([""] * len(df))).tolist(),
                                   vocab)
    return df, targets.float(), mask.float()


def macro_auroc_masked(scores: Tensor, targets: Tensor, mask: Tensor) -> float:
    """Mean over classes of the AUROC of ``scores[:, c]`` on the rows whose label space has c."""
    from scipy.stats import rankdata

    aurocs = []
    for c in range(scores.shape[1]):
        rows = mask[:, c] > 0
        y = targets[rows, c].numpy().astype(bool)
        n_pos, n_neg = int(y.sum()), int((~y).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        ranks = rankdata(scores[rows, c].double().numpy())
        aurocs.append((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aurocs)) if aurocs else math.nan


@torch.no_grad()
def head_diagnostics(head: nn.Module, feats: Tensor, targets: Tensor, mask: Tensor) -> dict[str, float]:
    """The five ``COLUMNS`` for CLS features ``feats`` (N, D) of labelled images."""
    was = head.training
    head.eval()
    logits = head(feats).float().cpu()
    emb = F.normalize(head.image_embedding(feats).float(), dim=-1).cpu()
    protos = F.normalize(head.prototype_embedding().float(), dim=-1).cpu()
    head.train(was)
    cos = emb @ protos.t()
    own = (targets * mask) > 0
    other = (mask > 0) & ~own
    return {
        "knowledge_heldout": float(knowledge_loss(logits, targets, mask)),
        "knowledge_heldout_prior": class_prior_floor(targets, mask),
        "knowledge_heldout_auroc": macro_auroc_masked(logits, targets, mask),
        "knowledge_cos_own": float(cos[own].mean()) if own.any() else math.nan,
        "knowledge_cos_other": float(cos[other].mean()) if other.any() else math.nan,
    }


class KnowledgeMonitor:
    """Embeds the held-out images once (decoded tensors kept in memory), scores them on demand."""

    def __init__(self, manifests: list[str], splits: list[str], vocab: Vocabulary, size: int,
                 max_images: int, device: torch.device, seed: int = 0, batch_size: int = 64):
        self.df, self.targets, self.mask = heldout_rows(manifests, splits, vocab, max_images, seed)
        self.size, self.device, self.batch_size = size, device, batch_size
        self._images: Tensor | None = None
        log.info("knowledge held-out monitor: %d labelled images; class-prior level %.4f",
                 len(self.df), class_prior_floor(self.targets, self.mask))

    def _pixels(self, backbone: nn.Module) -> Tensor:
        if self._images is None:
            tf = eval_transform(self.size, mean=backbone.mean, std=backbone.std)
            self._images = torch.stack([tf(read_rgb(Path(p))) for p in self.df["image"]])
        return self._images

    @torch.no_grad()
    def features(self, backbone: nn.Module) -> Tensor:
        """Teacher CLS features (N, D), as the knowledge head sees them in training."""
        was = backbone.training
        backbone.eval()
        x = self._pixels(backbone)
        out = [backbone(x[i:i + self.batch_size].to(self.device)).float() for i in range(0, len(x), self.batch_size)]
        backbone.train(was)
        return torch.cat(out)

    def run(self, backbone: nn.Module, head: nn.Module) -> dict[str, Any]:
        with torch.random.fork_rng(devices=[]):
            return head_diagnostics(head, self.features(backbone), self.targets, self.mask)


def monitor_for(trainer: Any) -> KnowledgeMonitor | None:
    """The monitor a trainer's config asks for (None when off, on non-main ranks, or under FSDP)."""
    from dermino.knowledge.vocabulary import Vocabulary

    cfg = trainer.cfg
    k = cfg.losses.knowledge
    if not (k.enabled and k.heldout) or not trainer.dist.is_main:
        return None
    if trainer.fsdp:
        log.warning("losses.knowledge.heldout is not supported with run.fsdp=true; held-out diagnostics are off")
        return None
    vocab_path = Path(k.vocabulary) if k.vocabulary else trainer.out_dir / "vocabulary.csv"
    return KnowledgeMonitor(list(k.heldout), list(k.heldout_splits), Vocabulary.load(vocab_path),
                            k.heldout_size or cfg.crops.global_size, k.heldout_max_images, trainer.device,
                            cfg.run.seed)
