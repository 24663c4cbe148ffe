"""The periodic kNN monitor: majority vote logic and an end-to-end call on real images."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from dermino.data.manifest import read_manifest
from dermino.data.sample import sample_manifests
from dermino.models import create
from dermino.pretrain.monitor import knn_accuracy, knn_predict


def test_knn_majority_vote_and_tie_break():
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    labels = ["a", "a", "a", "b", "b"]
    q = torch.nn.functional.normalize(torch.tensor([[0.05, 1.0], [1.0, 0.05]]), dim=1)
    assert knn_predict(bank, labels, q, k=3) == ["b", "a"]
    # k=2 with one vote each: the nearest neighbour's label wins
    assert knn_predict(bank, ["a", "b", "c", "d", "e"], q[:1], k=2) == ["d"]


def test_knn_accuracy_on_sample(tmp_path):
    ham = read_manifest(sample_manifests(tmp_path)["ham10000"])
    train = ham[ham["split"] == "train"].head(24)
    val = ham[ham["split"] == "test"].head(12)
    train.attrs, val.attrs = ham.attrs, ham.attrs
    torch.manual_seed(0)
    model = create("dermino_vit_tiny_14", depth=2, embed_dim=64, num_heads=2, img_size=56)
    acc = knn_accuracy(model, train, val, size=56, device=torch.device("cpu"))
    assert 0.0 <= acc <= 1.0
    # the same set as memory and query: every image finds itself first, so k=1 is perfect
    assert knn_accuracy(model, val, val, size=56, device=torch.device("cpu"), k=1) == 1.0
    unlabelled = val.assign(labels="")
    with pytest.raises(ValueError, match="labelled"):
        knn_accuracy(model, train, pd.DataFrame(unlabelled), size=56, device=torch.device("cpu"))
