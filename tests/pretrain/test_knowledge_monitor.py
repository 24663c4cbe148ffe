"""Held-out knowledge diagnostics and merging names by default (issue 11)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dermino.losses.knowledge import class_prior_floor, knowledge_loss
from dermino.models.knowledge_heads import SigmoidMatchHead
from dermino.pretrain.knowledge_monitor import head_diagnostics, macro_auroc_masked


def test_masked_macro_auroc_golden():
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.7], [0.2, 0.3], [0.1, 0.9]])
    targets = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    mask = torch.ones_like(targets)
    # class 0 separates perfectly (1.0); class 1: positives 0.3, 0.9 vs negatives 0.1, 0.7 -> 3/4
    assert macro_auroc_masked(scores, targets, mask) == pytest.approx((1.0 + 0.75) / 2)
    mask[1, 1] = 0  # row 1 outside class 1's label space: 0.3, 0.9 vs 0.1 -> 1.0
    assert macro_auroc_masked(scores, targets, mask) == pytest.approx(1.0)
    assert math.isnan(macro_auroc_masked(scores, torch.ones_like(targets), mask))


def test_head_diagnostics_on_features_aligned_with_their_prototypes():
    torch.manual_seed(0)
    text = torch.eye(16)[:3]  # orthogonal prototypes (mapped orthonormally into width 32)
    head = SigmoidMatchHead(text, 32)
    with torch.no_grad():
        head.bias.fill_(-5.0)  # cos 1 -> p = sigmoid(5); cos 0 -> sigmoid(-5)
    y = torch.arange(60) % 3
    feats = head.weight[y] + 0.05 * torch.randn(60, 32)  # each image near its own prototype
    targets = F.one_hot(y, 3).float()
    mask = torch.ones_like(targets)
    d = head_diagnostics(head, feats, targets, mask)
    assert d["knowledge_heldout"] == pytest.approx(knowledge_loss(head(feats), targets, mask).item(), rel=1e-6)
    assert d["knowledge_heldout_prior"] == pytest.approx(class_prior_floor(targets, mask))
    assert d["knowledge_heldout"] < d["knowledge_heldout_prior"]
    assert d["knowledge_heldout_auroc"] == pytest.approx(1.0)
    assert d["knowledge_cos_own"] > 0.9 > d["knowledge_cos_other"]
    shuffled = head_diagnostics(head, feats[torch.randperm(60)], targets, mask)
    assert shuffled["knowledge_heldout_auroc"] < 0.75 and shuffled["knowledge_heldout"] > d["knowledge_heldout"]


def test_run_without_vocabulary_merges_names_and_writes_them(tmp_path, caplog):
    from dermino.data.sample import sample_manifests
    from dermino.pretrain.config import tiny_config
    from dermino.pretrain.trainer import Trainer

    paths = sample_manifests(tmp_path / "manifests")
    df = pd.read_csv(paths["ham10000"], dtype=str, keep_default_na=False)
    bcc = df["labels"] == "basal cell carcinoma"
    assert bcc.sum() >= 2
    df.loc[df.index[bcc][::2], "labels"] = "BCC"  # the same disease, spelled as an abbreviation
    df.to_csv(paths["ham10000"], index=False)
    cfg = tiny_config(str(tmp_path / "run"))
    cfg.data.manifests = [str(paths["ham10000"])]
    with caplog.at_level("INFO"):
        trainer = Trainer(cfg)
    vocab = pd.read_csv(tmp_path / "run" / "vocabulary.csv", dtype=str, keep_default_na=False)
    assert "basal cell carcinoma" in trainer.classes and "BCC" not in trainer.classes
    row = vocab[vocab["name"] == "basal cell carcinoma"].iloc[0]
    assert "bcc" in row["variants"].lower()
    assert "wrote" in caplog.text and "vocabulary.csv" in caplog.text
    assert "'BCC' -> 'basal cell carcinoma'" in caplog.text
