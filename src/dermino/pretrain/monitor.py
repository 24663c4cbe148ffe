"""Periodic kNN monitor during pretraining: is the teacher's embedding getting more useful?

Deliberately small and self-contained (the full evaluation lives in dermino.evaluate):
embed a labelled train and val manifest with the teacher backbone, then a k=5 cosine
majority vote (accuracy) and similarity-weighted votes (macro AUROC, with the helpers of
``dermino.evaluate``). Rows without a label are dropped; the first label of a row is its class.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import torch
from torch import nn

from dermino.data.images import read_rgb
from dermino.data.manifest import resolve, split_labels
from dermino.data.transforms import eval_transform
from dermino.evaluate.knn import KNNConfig, knn_classify
from dermino.evaluate.metrics import macro_auroc


@torch.no_grad()
def embed(backbone: nn.Module, df: pd.DataFrame, size: int, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """L2-normalised CLS embeddings (N, D) of every row of ``df``."""
    tf = eval_transform(size, mean=backbone.mean, std=backbone.std)
    was_training = backbone.training
    backbone.eval()
    feats = []
    paths = [resolve(df, v) for v in df["image"]]
    for i in range(0, len(paths), batch_size):
        x = torch.stack([tf(read_rgb(p)) for p in paths[i : i + batch_size]]).to(device)
        feats.append(torch.nn.functional.normalize(backbone(x).float(), dim=-1).cpu())
    backbone.train(was_training)
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
    the query classes) of ``backbone``, embedding each image once."""
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
    return {"knn_accuracy": float(accuracy), "knn_macro_auroc": float(auroc)}
