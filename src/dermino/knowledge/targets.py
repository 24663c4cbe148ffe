"""Multi-hot targets and label-space masks for the knowledge loss (paper Eq. 6).

Eq. 6 supervises image i on class j only where n_ij = 1: disease j is in the label space of
the dataset image i came from. A HAM10000 image is not "negative for psoriasis"; HAM10000
simply cannot say. So every row gets two vectors over the C classes of the vocabulary: the
multi-hot ``targets`` (its labels) and the ``label_space_mask`` (what its source can express).
A row with an empty label space (an unlabelled image) gets an all-zero mask: it contributes
nothing to the loss.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from dermino.data.manifest import split_labels
from dermino.knowledge.vocabulary import UnknownLabelError, Vocabulary


def _multi_hot(cells: Sequence[object], vocab: Vocabulary, column: str) -> np.ndarray:
    """(N, C) float32 multi-hot of ';'-separated cells; parses each distinct cell once."""
    text = pd.Series(list(cells), dtype=object).fillna("").astype(str)
    codes, uniques = pd.factorize(text, sort=False)
    table = np.zeros((len(uniques), len(vocab)), dtype=np.float32)
    for u, cell in enumerate(uniques):
        for label in split_labels(cell):
            try:
                table[u, vocab.index(label)] = 1.0
            except UnknownLabelError as exc:
                rows = np.flatnonzero(codes == u)
                more = f" (and {len(rows) - 1} other rows)" if len(rows) > 1 else ""
                raise UnknownLabelError(f"{column} of row {int(rows[0])}{more}: {exc}") from None
    return table[codes] if len(codes) else np.zeros((0, len(vocab)), dtype=np.float32)


def encode_targets(
    labels: Sequence[object], label_spaces: Sequence[object], vocab: Vocabulary
) -> tuple[Tensor, Tensor]:
    """``targets`` (N, C) and ``label_space_mask`` (N, C), float32, columns = ``vocab.canonical``.

    ``labels``/``label_spaces`` are manifest cells (';'-separated names, any spelling the
    vocabulary knows; empty/None allowed). Names outside the vocabulary raise
    ``UnknownLabelError`` naming the name and the row. A label outside its row's non-empty label
    space is a data error (the adapter wrote an inconsistent row) and raises ``ValueError``.
    """
    if len(labels) != len(label_spaces):
        raise ValueError(f"{len(labels)} label cells but {len(label_spaces)} label_space cells")
    targets = _multi_hot(labels, vocab, "labels")
    mask = _multi_hot(label_spaces, vocab, "label_space")
    has_space = mask.any(axis=1)
    outside = (targets > 0) & (mask == 0) & has_space[:, None]
    if outside.any():
        row, col = (int(v[0]) for v in np.nonzero(outside))
        n_rows = int(outside.any(axis=1).sum())
        more = f" (and {n_rows - 1} other rows)" if n_rows > 1 else ""
        raise ValueError(
            f"row {row}{more}: label {vocab.canonical[col]!r} is not in the row's label_space "
            f"{label_spaces[row]!r}; fix the manifest's label_space for this source"
        )
    return torch.from_numpy(targets), torch.from_numpy(mask)


def encode_manifest_targets(df: pd.DataFrame, vocab: Vocabulary) -> tuple[Tensor, Tensor]:
    """``encode_targets`` on a manifest's ``labels`` and ``label_space`` columns (missing = empty)."""
    n = len(df)
    labels = df["labels"].tolist() if "labels" in df.columns else [""] * n
    spaces = df["label_space"].tolist() if "label_space" in df.columns else [""] * n
    return encode_targets(labels, spaces, vocab)
