"""Multi-hot targets and label-space masks over the vocabulary (no text encoder needed)."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch

from dermino.knowledge.targets import encode_manifest_targets, encode_targets
from dermino.knowledge.vocabulary import Entry, UnknownLabelError, Vocabulary
from dermino.losses.knowledge import knowledge_loss

HAM_SPACE = "melanocytic nevus;melanoma;basal cell carcinoma"
PH2_SPACE = "common nevus;atypical nevus;melanoma"


@pytest.fixture()
def vocab() -> Vocabulary:
    # C = 5 classes: atypical nevus, basal cell carcinoma, common nevus, melanocytic nevus, melanoma
    names = ["melanocytic nevus", "melanoma", "basal cell carcinoma", "common nevus", "atypical nevus"]
    entries = [Entry(n, n) for n in names]
    entries.append(Entry("naevus", "melanocytic nevus", similarity=0.97))  # a merged spelling
    return Vocabulary(entries)


def test_targets_and_masks_golden(vocab):
    assert vocab.canonical == ["atypical nevus", "basal cell carcinoma", "common nevus", "melanocytic nevus", "melanoma"]
    df = pd.DataFrame({
        "labels": ["melanoma", "nv", "atypical nevus", "", "melanoma;basal cell carcinoma", None],
        "label_space": [HAM_SPACE, HAM_SPACE, PH2_SPACE, "", HAM_SPACE, HAM_SPACE],
    })
    targets, mask = encode_manifest_targets(df, vocab)
    assert targets.dtype == mask.dtype == torch.float32
    assert targets.tolist() == [
        [0, 0, 0, 0, 1],
        [0, 0, 0, 1, 0],  # 'nv' -> melanocytic nevus (normalised)
        [1, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 1, 0, 0, 1],  # multi-label
        [0, 0, 0, 0, 0],  # labelled source, no label: negative for all in its space
    ]
    ham, ph2 = [0, 1, 0, 1, 1], [1, 0, 1, 0, 1]
    assert mask.tolist() == [ham, ham, ph2, [0] * 5, ham, ham]


def test_empty_label_space_contributes_nothing(vocab):
    # an unlabelled image (empty label space) gets a zero mask -> zero loss and zero gradient
    targets, mask = encode_targets(["melanoma", ""], [HAM_SPACE, ""], vocab)
    assert mask[1].sum() == 0
    logits = torch.randn(2, len(vocab), requires_grad=True)
    knowledge_loss(logits, targets, mask).backward()
    assert torch.all(logits.grad[1] == 0)
    assert torch.all(logits.grad[0, [0, 2]] == 0)  # outside HAM's space
    assert torch.all(logits.grad[0, [1, 3, 4]] != 0)


def test_unknown_label_names_label_and_row(vocab):
    with pytest.raises(UnknownLabelError, match=r"labels of row 1 \(and 1 other rows\): disease name 'psoriasis'"):
        encode_targets(["melanoma", "psoriasis", "psoriasis"], [HAM_SPACE] * 3, vocab)
    with pytest.raises(KeyError, match=r"label_space of row 0: disease name 'eczema'"):
        encode_targets([""], ["melanoma;eczema"], vocab)


def test_label_outside_its_label_space_is_an_error(vocab):
    with pytest.raises(ValueError, match=r"row 1: label 'common nevus' is not in the row's label_space"):
        encode_targets(["melanoma", "common nevus"], [HAM_SPACE, HAM_SPACE], vocab)
    with pytest.raises(ValueError, match="2 label cells but 1"):
        encode_targets(["melanoma", "melanoma"], [HAM_SPACE], vocab)


def test_missing_columns_and_empty_manifest(vocab):
    targets, mask = encode_manifest_targets(pd.DataFrame({"image": ["a.jpg", "b.jpg"]}), vocab)
    assert targets.shape == mask.shape == (2, 5) and targets.sum() == 0 and mask.sum() == 0
    targets, mask = encode_targets([], [], vocab)
    assert targets.shape == mask.shape == (0, 5)


def test_vectorised_over_rows(vocab):
    # 200k rows (HAM10000 x 20) take well under a second: each distinct cell is parsed once
    n = 200_000
    labels = (["melanoma", "melanocytic nevus", "basal cell carcinoma", ""] * (n // 4))
    start = time.perf_counter()
    targets, mask = encode_targets(labels, [HAM_SPACE] * n, vocab)
    elapsed = time.perf_counter() - start
    assert targets.shape == (n, 5)
    assert targets.sum(0).tolist() == [0, n / 4, 0, n / 4, n / 4]
    assert mask.sum(0).tolist() == [0, n, 0, n, n]
    assert elapsed < 3.0, elapsed
