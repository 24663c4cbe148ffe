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


def listed_images(gt_path: Path | None, images: dict[str, Path], codes: dict[str, str],
                  missing: list[str], fill_absent: dict[str, str] | None = None) -> list[tuple[str, Path, str]]:
    """(image id, file, canonical label) of each row of the ground-truth table at ``gt_path``; with no
    table, every image found, unlabelled. Ids the table lists without a file are appended to ``missing``.
    ``fill_absent``: columns a release may omit (ISIC 2019's test table has no UNK), with their value."""
    if gt_path is None:
        return [(k, images[k], "") for k in sorted(images)]
    gt = pd.read_csv(gt_path, dtype=str, keep_default_na=False)
    for col, value in (fill_absent or {}).items():
        if col not in gt.columns:
            gt[col] = value
    out = []
    for iid, label in zip(gt["image"], onehot_labels(gt, gt_path, codes), strict=True):
        if iid in images:
            out.append((iid, images[iid], label))
        else:
            missing.append(iid)
    return out
