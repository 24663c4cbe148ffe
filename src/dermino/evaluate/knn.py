"""k-nearest-neighbour classification on frozen features (cosine similarity).

As in the paper, the predicted class is the majority vote of the k=5 nearest training
images; ties between classes are broken by the summed similarity of their voters (then by
the nearest voter). AUROC needs scores, so class probabilities come separately from
similarity-weighted votes, ``w = exp(sim / T)`` with T = 0.07 (DINO's weighted kNN),
normalised per test image. Search is an exact chunked matrix multiply in torch (or faiss
when installed and asked for), so 100k x 768 banks fit in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dermino.evaluate.task import EvalTask, Predictions
from dermino.progress import tqdm


@dataclass
class KNNConfig:
    k: int = 5
    temperature: float = 0.07
    chunk_size: int = 1024  # test rows per similarity block
    use_faiss: bool = False  # exact inner-product index when faiss is importable


@dataclass
class KNNOutput:
    pred: np.ndarray  # (M,) majority-vote class
    probs: np.ndarray  # (M, C) similarity-weighted vote shares
    neighbours: np.ndarray  # (M, k) train row indices, nearest first
    similarities: np.ndarray  # (M, k)


def _normalise(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    return torch.nn.functional.normalize(t, dim=1)


def _search_torch(train: torch.Tensor, test: torch.Tensor, k: int, chunk: int, progress: bool):
    sims, idxs = [], []
    for start in tqdm(range(0, len(test), chunk), desc="knn", disable=not progress, leave=False):
        block = test[start : start + chunk] @ train.T
        s, i = block.topk(k, dim=1)
        sims.append(s)
        idxs.append(i)
    return torch.cat(sims), torch.cat(idxs)


def _search_faiss(train: torch.Tensor, test: torch.Tensor, k: int):
    import faiss

    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train.numpy())
    s, i = index.search(test.numpy(), k)
    return torch.from_numpy(s), torch.from_numpy(i).long()


def nearest_neighbours(
    train_x: np.ndarray, test_x: np.ndarray, k: int, chunk_size: int = 1024,
    use_faiss: bool = False, progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k: ``(similarities, indices)`` each ``(M, k)``, nearest first."""
    if len(train_x) == 0:
        raise ValueError("kNN: empty training set")
    k = min(k, len(train_x))
    train, test = _normalise(train_x), _normalise(test_x)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"kNN: train features are {train.shape[1]}-d, test {test.shape[1]}-d")
    with torch.inference_mode():
        if use_faiss:
            try:
                s, i = _search_faiss(train, test, k)
            except ImportError:
                s, i = _search_torch(train, test, k, chunk_size, progress)
        else:
            s, i = _search_torch(train, test, k, chunk_size, progress)
    return s.numpy(), i.numpy()


def vote(
    neighbour_labels: np.ndarray, similarities: np.ndarray, n_classes: int, temperature: float
) -> tuple[np.ndarray, np.ndarray]:
    """Majority vote (ties by summed similarity, then nearest) and weighted-vote probabilities."""
    m, k = neighbour_labels.shape
    onehot = np.zeros((m, k, n_classes))
    np.put_along_axis(onehot, neighbour_labels[..., None], 1.0, axis=2)
    counts = onehot.sum(1)  # (M, C)
    sim_sum = (onehot * similarities[..., None]).sum(1)
    # rank position of each class's nearest voter (lower is nearer); k for non-voters
    first = np.where(onehot.any(1), onehot.argmax(1), k)
    # lexicographic: most votes, then largest summed similarity, then nearest voter
    key = counts * 1e6 + sim_sum * 1e2 - first * 1e-3
    key = np.where(counts > 0, key, -np.inf)
    pred = key.argmax(1)
    w = np.exp((similarities - similarities.max(1, keepdims=True)) / temperature)
    probs = (onehot * w[..., None]).sum(1)
    probs /= probs.sum(1, keepdims=True)
    return pred, probs


def knn_classify(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, n_classes: int,
    cfg: KNNConfig | None = None, progress: bool = False,
) -> KNNOutput:
    """Classify ``test_x`` by its k nearest rows of ``train_x`` (labels ``train_y``)."""
    cfg = cfg or KNNConfig()
    train_y = np.asarray(train_y, dtype=int)
    if len(train_y) != len(train_x):
        raise ValueError(f"kNN: {len(train_x)} train features but {len(train_y)} labels")
    sims, idx = nearest_neighbours(train_x, test_x, cfg.k, cfg.chunk_size, cfg.use_faiss, progress)
    pred, probs = vote(train_y[idx], sims.astype(np.float64), n_classes, cfg.temperature)
    return KNNOutput(pred=pred, probs=probs, neighbours=idx, similarities=sims)


def knn_protocol(task: EvalTask, cfg: KNNConfig | None = None, progress: bool = False) -> Predictions:
    """kNN with train+val rows as the bank (kNN selects nothing, so val is just more data)."""
    bank = np.concatenate([task.rows("train"), task.rows("val")])
    test = task.rows("test")
    out = knn_classify(task.features[bank], task.y[bank], task.features[test], task.n_classes, cfg, progress)
    return Predictions(rows=test, y_true=task.y[test], probs=out.probs, pred=out.pred,
                       info={"k": (cfg or KNNConfig()).k, "bank_size": len(bank)})
