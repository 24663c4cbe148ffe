"""ISIC 2018 Task 3 (Codella et al. 2019; the HAM10000 images): 10,015 training, 193
validation and 1,512 test dermoscopic images, 7 diagnoses.

Official source: https://challenge.isic-archive.com/data/#2018 (CC BY-NC 4.0).

Layout read (as published)::

    ISIC2018_Task3_Training_Input/ISIC_0024306.jpg
    ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv
        image,MEL,NV,BCC,AKIEC,BKL,DF,VASC    (one-hot, 1.0 / 0.0)
    ISIC2018_Task3_Training_LesionGroupings.csv   image,lesion_id,diagnosis_confirm_type (optional)
    ... the same for Validation and Test (ground truth released after the challenge)

Test and validation images without a ground-truth file get split ``none``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import download_files, finish, index_files, rel
from ._onehot import listed_images

NAME = "isic2018"
CODES = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df", "VASC": "vasc"}
PARTS = {"Training": "train", "Validation": "val", "Test": "test"}
_BASE = "https://isic-challenge-data.s3.amazonaws.com/2018/"
DOWNLOAD_URLS = tuple(_BASE + f"ISIC2018_Task3_{p}_{k}.zip" for p in PARTS for k in ("Input", "GroundTruth"))


def build_manifest(root: Path) -> pd.DataFrame:
    root = Path(root)
    rows, missing, found = [], [], False
    for part, split in PARTS.items():
        images = index_files([root / f"ISIC2018_Task3_{part}_Input"], (".jpg", ".jpeg", ".png"))
        if not images:
            continue
        found = True
        gt_path = next((p for p in (root / f"ISIC2018_Task3_{part}_GroundTruth" / f"ISIC2018_Task3_{part}_GroundTruth.csv",
                                    root / f"ISIC2018_Task3_{part}_GroundTruth.csv") if p.is_file()), None)
        groups_path = root / f"ISIC2018_Task3_{part}_LesionGroupings.csv"
        groups = (pd.read_csv(groups_path, dtype=str, keep_default_na=False).set_index("image")
                  if groups_path.is_file() else pd.DataFrame())
        for iid, img, label in listed_images(gt_path, images, CODES, missing):
            g = groups.loc[iid] if iid in groups.index else {}
            rows.append({"image": rel(img, root), "split": split if gt_path is not None else "none",
                         "labels": label, "lesion_id": g.get("lesion_id", ""), "modality": "dermoscopic",
                         "image_id": iid, "dx_type": g.get("diagnosis_confirm_type", "")})
    if not found:
        raise FileNotFoundError(f"no ISIC2018_Task3_*_Input folder under {root}")
    from ..disease_names import normalise_disease_name

    return finish(rows, root, NAME, [normalise_disease_name(c) for c in CODES.values()], missing)


def download(out: Path) -> None:
    """Fetch the public ISIC 2018 Task 3 archives (about 3 GB) into ``out``."""
    download_files(DOWNLOAD_URLS, out)
