"""Periodic kNN monitor during pretraining: is the teacher's embedding getting more useful?

``KnnMonitor`` runs it for a trainer every ``run.monitor_every`` steps, appends monitor.csv and
asks the collapse guard for a verdict. Besides kNN and RankMe (CLS embeddings) it watches the
patch features: the dense probe's lesion Dice on a masked monitor set (``data.monitor_masks``,
:mod:`dermino.evaluate.dense`) and the Gram distance to the start (:mod:`.gram_drift`).

Deliberately small and self-contained (the full evaluation lives in dermino.evaluate):
embed a labelled train and val manifest with the teacher backbone, then a k=5 cosine
majority vote (accuracy) and similarity-weighted votes (macro AUROC, with the helpers of
``dermino.evaluate``). Rows without a label are dropped; the first label of a row is its class.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from dermino.data.manifest import read_manifest, split_labels
from dermino.data.masks import Pair, check_masks, mask_pairs, subset_pairs
from dermino.evaluate.dense import dense_dice
from dermino.evaluate.knn import KNNConfig, knn_classify
from dermino.evaluate.metrics import macro_auroc
from dermino.evaluate.rank import effective_rank
from dermino.files import load_torch, save_atomic
from dermino.pretrain import collapse
from dermino.pretrain.distributed import barrier
from dermino.pretrain.eval_images import eval_batches
from dermino.pretrain.gram_drift import gram_distance, patch_grams
from dermino.pretrain.run_log import drop_rows_after

log = logging.getLogger(__name__)


@torch.no_grad()
def embed(backbone: nn.Module, df: pd.DataFrame, size: int, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised CLS embeddings (N, D) of every row of ``df``."""
    feats = [torch.nn.functional.normalize(backbone(x).float(), dim=-1).cpu()
             for x in eval_batches(backbone, df, size, device, batch_size)]
    return torch.cat(feats) if feats else torch.zeros(0, 0)


def knn_predict(train: torch.Tensor, train_y: list[str], query: torch.Tensor, k: int = 5) -> list[str]:
    """Majority vote of the k most cosine-similar training rows (ties: the nearest wins)."""
    k = min(k, len(train_y))
    idx = (query @ train.t()).topk(k, dim=1).indices.tolist()
    out = []
    for row in idx:
        votes = Counter(train_y[j] for j in row)
        best = max(votes.values())
        out.append(next(train_y[j] for j in row if votes[train_y[j]] == best))
    return out


def labelled(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Rows with a label, and the first label of each (its class)."""
    first = [(split_labels(v) or [""])[0] for v in df["labels"]]
    keep = [i for i, y in enumerate(first) if y]
    out = df.iloc[keep].reset_index(drop=True)
    out.attrs = dict(df.attrs)
    return out, [first[i] for i in keep]


def knn_accuracy(
    backbone: nn.Module, train_df: pd.DataFrame, val_df: pd.DataFrame, size: int, device: torch.device, k: int = 5
) -> float:
    """k-NN accuracy of ``backbone`` on ``val_df`` using ``train_df`` as the memory bank."""
    train_df, train_y = labelled(train_df)
    val_df, val_y = labelled(val_df)
    if not train_y or not val_y:
        raise ValueError("kNN monitor needs labelled rows in both the train and the val manifest")
    pred = knn_predict(embed(backbone, train_df, size, device), train_y, embed(backbone, val_df, size, device), k)
    return sum(p == y for p, y in zip(pred, val_y, strict=True)) / len(val_y)


def knn_scores(
    backbone: nn.Module, train_df: pd.DataFrame, val_df: pd.DataFrame, size: int, device: torch.device, k: int = 5
) -> dict[str, float]:
    """``knn_accuracy`` (majority vote) and ``knn_macro_auroc`` (weighted votes, macro over
    the query classes) of ``backbone``, embedding each image once, and ``rankme``: the effective
    rank of the query embeddings (a collapse shows there before any label does)."""
    train_df, train_y = labelled(train_df)
    val_df, val_y = labelled(val_df)
    if not train_y or not val_y:
        raise ValueError("kNN monitor needs labelled rows in both the train and the val manifest")
    bank, query = embed(backbone, train_df, size, device), embed(backbone, val_df, size, device)
    accuracy = sum(p == y for p, y in zip(knn_predict(bank, train_y, query, k), val_y, strict=True)) / len(val_y)
    classes = sorted(set(train_y))
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index.get(v, -1) for v in val_y])
    seen = y >= 0  # a query class the bank lacks has no score column
    out = knn_classify(bank.numpy(), np.array([index[v] for v in train_y]), query[seen].numpy(), len(classes),
                       KNNConfig(k=k))
    # over the classes the queries hold (a small query set may lack a rare one)
    auroc = macro_auroc(y[seen], out.probs) if len(classes) > 1 and seen.any() else float("nan")
    return {"knn_accuracy": float(accuracy), "knn_macro_auroc": float(auroc), "rankme": effective_rank(query)}


def split_rows(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of ``split`` when the manifest has them (one adapter manifest serves both), else all."""
    if "split" in df.columns and (df["split"] == split).any():
        out = df[df["split"] == split].reset_index(drop=True)
        out.attrs = dict(df.attrs)
        return out
    return df


def dense_monitor_pairs(manifest: str, max_images: int, seed: int = 0) -> tuple[list[Pair], list[Pair]]:
    """(fit, score) pairs of the dense monitor: split "train" and split "test" rows with a mask,
    at most ``max_images`` of each (the seeded draw ``dermino segment``'s ``max_train`` makes)."""
    df = read_manifest(manifest)
    fit, score = mask_pairs(df, "train"), mask_pairs(df, "test")
    if not fit or not score:
        raise ValueError(f"data.monitor_masks={manifest}: needs rows with masks in both split 'train' and 'test'")
    fit, score = subset_pairs(fit, max_images, seed), subset_pairs(score, max_images, seed)
    check_masks(fit + score, progress=False)  # a bad mask stops the run now, not at the first monitor step
    return fit, score


def _upgrade_columns(path: Any) -> None:
    """A monitor.csv from before a column was added: rewrite it with today's columns (new ones empty)."""
    if path.is_file() and path.stat().st_size > 0:
        df = pd.read_csv(path)
        if list(df.columns) != collapse.MONITOR_COLUMNS:
            df.reindex(columns=collapse.MONITOR_COLUMNS).to_csv(path, index=False)


class KnnMonitor:
    """kNN accuracy and macro AUROC, RankMe, dense Dice and Gram distance of the teacher on the
    monitor sets, appended to monitor.csv (rank 0) with their change from step 0, judged by the
    collapse guard."""

    def __init__(self, trainer: Any):  # a pretrain Trainer
        self.t = trainer
        d = trainer.cfg.data
        self.train_df = split_rows(read_manifest(d.monitor_train), "train")
        self.val_df = split_rows(read_manifest(d.monitor_val), "val")
        self.mask_fit, self.mask_score = dense_monitor_pairs(d.monitor_masks, d.monitor_masks_max) \
            if d.monitor_masks else ([], [])
        self.gram_df = self.val_df.head(d.monitor_gram_images)
        self.gram_df.attrs = dict(self.val_df.attrs)
        r = trainer.cfg.run
        self.guard = collapse.CollapseGuard(r.collapse_metric, r.collapse_margin, r.collapse_patience)
        path = trainer.out_dir / "monitor.csv"
        if trainer.dist.is_main:
            if trainer.step == 0:  # a fresh start (perhaps after a collapse stop): a new baseline
                path.unlink(missing_ok=True)
            _upgrade_columns(path)
            drop_rows_after(path, trainer.step)
            if path.is_file() and path.stat().st_size > 0:  # a resumed run: the start and the streak
                self.guard.replay(pd.read_csv(path).to_dict("records"))
        self.gram_start = self._gram_start()

    def _gram_start(self) -> torch.Tensor | None:
        """The start's Gram matrices: computed before the first step (and saved), read back on a resume."""
        if len(self.gram_df) == 0:
            return None
        path = self.t.out_dir / "monitor_gram_start.pt"
        teacher = self.t.whole_teacher_backbone()  # every rank (FSDP gathers shards)
        if teacher is None:
            return None
        if self.t.step == 0:
            with torch.random.fork_rng(devices=[]):
                grams = patch_grams(teacher, self.gram_df, self.t.cfg.data.monitor_size, self.t.device)
            save_atomic(grams, path)
            return grams
        if path.is_file():
            return load_torch(path, what="Gram matrices of the start")
        log.warning("%s is missing: the Gram distance to the start is not known for this resumed run", path)
        return None

    def patch_scores(self, teacher: nn.Module) -> dict[str, float]:
        """``dense_dice`` and ``gram_distance`` of the teacher (NaN when not configured)."""
        size = self.t.cfg.data.monitor_size
        out = {"dense_dice": float("nan"), "gram_distance": float("nan")}
        if self.mask_fit:
            out["dense_dice"] = dense_dice(teacher, self.mask_fit, self.mask_score, (size, size), device=self.t.device)
        if self.gram_start is not None:
            out["gram_distance"] = gram_distance(self.gram_start, patch_grams(teacher, self.gram_df, size, self.t.device))
        return out

    def run(self, step: int) -> collapse.Verdict:
        """Evaluate (rank 0) and return the guard's verdict (the same on every rank)."""
        teacher = self.t.whole_teacher_backbone()  # every rank (FSDP gathers shards)
        verdict = None
        if teacher is not None:
            with torch.random.fork_rng(devices=[]):
                scores = knn_scores(teacher, self.train_df, self.val_df, self.t.cfg.data.monitor_size, self.t.device)
                scores.update(self.patch_scores(teacher))
            verdict = self.guard.update(step, scores)
            path = self.t.out_dir / "monitor.csv"
            new = not path.is_file() or path.stat().st_size == 0
            with open(path, "a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=collapse.MONITOR_COLUMNS, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(self.guard.row(step, scores, verdict))
            change = "" if verdict.change is None else f" ({self.guard.metric} {verdict.change:+.4f} from the start)"
            log.info("step %d: kNN (k=5) accuracy %.4f, macro AUROC %.4f, RankMe %.1f, dense Dice %.4f, "
                     "Gram distance %.3f%s", step, scores["knn_accuracy"], scores["knn_macro_auroc"], scores["rankme"],
                     scores["dense_dice"], scores["gram_distance"], change)
        if dist.is_initialized():
            box = [verdict]
            dist.broadcast_object_list(box, src=0)
            verdict = box[0]
        barrier()
        assert verdict is not None
        return verdict
