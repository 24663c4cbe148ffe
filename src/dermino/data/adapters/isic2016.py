"""ISIC 2016 (ISBI 2016 Part 3, Gutman et al. 2016): 900 training, 379 test dermoscopic images.

Official source: https://challenge.isic-archive.com/data/#2016 (ISIC archive terms: CC-0 or
CC-BY-NC per image). Task: melanoma ("malignant") vs benign.

Layout read (as published)::

    ISBI2016_ISIC_Part3_Training_Data/ISIC_0000000.jpg
    ISBI2016_ISIC_Part3_Training_GroundTruth.csv     no header: ISIC_0000000,benign
    ISBI2016_ISIC_Part3_Test_Data/ISIC_0000003.jpg
    ISBI2016_ISIC_Part3_Test_GroundTruth.csv         no header: ISIC_0000003,0.0
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import download_files, finish, index_files, rel

NAME = "isic2016"
MEL, BENIGN = "melanoma", "benign lesion"
PARTS = {"Training": "train", "Test": "test"}
_BASE = "https://isic-challenge-data.s3.amazonaws.com/2016/"
DOWNLOAD_URLS = tuple(_BASE + f"ISBI2016_ISIC_Part3_{p}_{k}" for p in PARTS for k in ("Data.zip", "GroundTruth.csv"))
_LABEL = {"benign": BENIGN, "malignant": MEL, "0": BENIGN, "0.0": BENIGN, "1": MEL, "1.0": MEL}


def build_manifest(root: Path) -> pd.DataFrame:
    root = Path(root)
    rows, missing, found = [], [], False
    for part, split in PARTS.items():
        gt_path = root / f"ISBI2016_ISIC_Part3_{part}_GroundTruth.csv"
        if not gt_path.is_file():
            continue
        found = True
        images = index_files([root / f"ISBI2016_ISIC_Part3_{part}_Data"], (".jpg", ".jpeg", ".png"))
        gt = pd.read_csv(gt_path, header=None, names=["image_id", "label"], dtype=str, keep_default_na=False)
        for i, r in enumerate(gt.itertuples()):
            label = _LABEL.get(r.label.strip().lower())
            if label is None:
                raise ValueError(f"{gt_path}: row {i} ({r.image_id}): unknown label {r.label!r}")
            img = images.get(r.image_id.strip())
            if img is None:
                missing.append(r.image_id)
                continue
            rows.append({"image": rel(img, root), "split": split, "labels": label, "modality": "dermoscopic",
                         "image_id": r.image_id.strip()})
    if not found:
        raise FileNotFoundError(f"no ISBI2016_ISIC_Part3_*_GroundTruth.csv under {root}")
    return finish(rows, root, NAME, [MEL, BENIGN], missing)


def download(out: Path) -> None:
    """Fetch the public ISIC 2016 Part 3 archives into ``out``."""
    download_files(DOWNLOAD_URLS, out)
