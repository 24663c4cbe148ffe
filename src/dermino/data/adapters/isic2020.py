"""ISIC 2020 (SIIM-ISIC melanoma, Rotemberg et al. 2021): 33,126 training and 10,982 test
dermoscopic images from 2,056 patients.

Official source: https://challenge.isic-archive.com/data/#2020 (CC BY-NC 4.0).

Layout read (as published; the Kaggle copy's ``train/`` + ``train.csv`` works too)::

    ISIC_2020_Training_JPEG/train/ISIC_2637011.jpg     (or train/)
    ISIC_2020_Training_GroundTruth_v2.csv  image_name,patient_id,lesion_id,sex,age_approx,
        anatom_site_general_challenge,diagnosis,benign_malignant,target   (v1: no lesion_id)
    ISIC_2020_Test_Input/ + ISIC_2020_Test_Metadata.csv   (no labels: split ``none``)

Labels: the ``diagnosis`` column (nevus, melanoma, seborrheic keratosis, lentigo NOS, ...);
rows whose diagnosis is ``unknown`` become ``benign lesion`` (all of them are benign).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..disease_names import normalise_disease_name
from ._common import clean, clean_age, clean_sex, download_files, finish, index_files, rel

NAME = "isic2020"
_BASE = "https://isic-challenge-data.s3.amazonaws.com/2020/"
DOWNLOAD_URLS = (_BASE + "ISIC_2020_Training_JPEG.zip", _BASE + "ISIC_2020_Training_GroundTruth_v2.csv",
                 _BASE + "ISIC_2020_Test_JPEG.zip", _BASE + "ISIC_2020_Test_Metadata.csv")
GT_NAMES = ("ISIC_2020_Training_GroundTruth_v2.csv", "ISIC_2020_Training_GroundTruth.csv", "train.csv")


def _label(r: dict, path: Path, i: int) -> str:
    dx = clean(r.get("diagnosis", ""))
    if dx:
        return normalise_disease_name(dx)
    bm = clean(r.get("benign_malignant", "")).lower()
    if bm == "benign":
        return "benign lesion"
    if bm == "malignant":
        return "melanoma"
    raise ValueError(f"{path}: row {i} ({r.get('image_name')}): no diagnosis and no benign_malignant")


def build_manifest(root: Path) -> pd.DataFrame:
    root = Path(root)
    rows, missing = [], []
    gt_path = next((root / n for n in GT_NAMES if (root / n).is_file()), None)
    if gt_path is None:
        raise FileNotFoundError(f"ISIC 2020 ground truth not found; looked for {', '.join(str(root / n) for n in GT_NAMES)}")
    images = index_files([root / "ISIC_2020_Training_JPEG" / "train", root / "ISIC_2020_Training_JPEG",
                          root / "train", root / "jpeg" / "train"], (".jpg", ".jpeg", ".png", ".dcm"))
    gt = pd.read_csv(gt_path, dtype=str, keep_default_na=False)
    for i, r in enumerate(gt.to_dict("records")):
        iid = r["image_name"]
        img = images.get(iid)
        if img is None:
            missing.append(iid)
            continue
        rows.append({"image": rel(img, root), "split": "train", "labels": _label(r, gt_path, i),
                     "lesion_id": clean(r.get("lesion_id", "")), "patient_id": clean(r.get("patient_id", "")),
                     "sex": clean_sex(r.get("sex", "")), "age": clean_age(r.get("age_approx", "")),
                     "site": clean(r.get("anatom_site_general_challenge", "")), "modality": "dermoscopic",
                     "image_id": iid, "target": clean(r.get("target", ""))})
    test_meta = root / "ISIC_2020_Test_Metadata.csv"
    test_images = index_files([root / "ISIC_2020_Test_Input", root / "ISIC_2020_Test_JPEG", root / "test"],
                              (".jpg", ".jpeg", ".png"))
    if test_images:
        meta = pd.read_csv(test_meta, dtype=str, keep_default_na=False) if test_meta.is_file() else pd.DataFrame()
        by_id = {r.get("image", r.get("image_name", "")): r for r in meta.to_dict("records")}
        for iid, img in sorted(test_images.items()):
            m = by_id.get(iid, {})
            rows.append({"image": rel(img, root), "split": "none", "labels": "",
                         "patient_id": clean(m.get("patient", m.get("patient_id", ""))),
                         "sex": clean_sex(m.get("sex", "")), "age": clean_age(m.get("age_approx", "")),
                         "site": clean(m.get("anatom_site_general", "")), "modality": "dermoscopic", "image_id": iid})
    space = sorted({r["labels"] for r in rows if r["labels"]})
    return finish(rows, root, NAME, space, missing)


def download(out: Path) -> None:
    """Fetch the public ISIC 2020 archives (about 48 GB) into ``out``."""
    download_files(DOWNLOAD_URLS, out)
