"""Ground-truth tables with one column per diagnosis (ISIC 2018 / 2019): row -> canonical label."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..disease_names import normalise_disease_name


def onehot_labels(gt: pd.DataFrame, path: Path, codes: dict[str, str]) -> list[str]:
    """The one diagnosis column holding 1 in each row, as a canonical disease name."""
    absent = [c for c in codes if c not in gt.columns]
    if absent:
        raise ValueError(f"{path}: diagnosis column(s) {absent} missing; found {list(gt.columns)}")
    values = gt[list(codes)].astype(float).to_numpy()
    out = []
    for i, row in enumerate(values):
        hits = [c for c, v in zip(codes, row, strict=True) if v >= 0.5]
        if len(hits) != 1:
            raise ValueError(f"{path}: row {i} ({gt.iloc[i, 0]}): expected one diagnosis set, got {hits}")
        out.append(normalise_disease_name(codes[hits[0]]))
    return out
