"""ISIC 2019 (BCN20000 + HAM10000 + MSK): 25,331 training and 8,238 test dermoscopic images.

Official source: https://challenge.isic-archive.com/data/#2019 (CC BY-NC 4.0; cite
Tschandl 2018, Codella 2018, Combalia 2019).

Layout read (as published)::

    ISIC_2019_Training_Input/ISIC_0000000.jpg
    ISIC_2019_Training_GroundTruth.csv   image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot)
    ISIC_2019_Training_Metadata.csv      image,age_approx,anatom_site_general,lesion_id,sex
    ISIC_2019_Test_Input/ + ISIC_2019_Test_Metadata.csv (+ ISIC_2019_Test_GroundTruth.csv when present)

``UNK`` (none of the others) rows stay in the manifest unlabelled (usable for pretraining).
Test images without ground truth get split ``none``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..disease_names import normalise_disease_name
from ._common import clean, clean_age, clean_sex, download_files, finish, index_files, rel
from ._onehot import listed_images

NAME = "isic2019"
CODES = {"MEL": "mel", "NV": "nv", "BCC": "bcc", "AK": "ak", "BKL": "bkl", "DF": "df", "VASC": "vasc",
         "SCC": "scc", "UNK": ""}
PARTS = {"Training": "train", "Test": "test"}
_BASE = "https://isic-challenge-data.s3.amazonaws.com/2019/"
DOWNLOAD_URLS = (_BASE + "ISIC_2019_Training_Input.zip", _BASE + "ISIC_2019_Training_GroundTruth.csv",
                 _BASE + "ISIC_2019_Training_Metadata.csv", _BASE + "ISIC_2019_Test_Input.zip",
                 _BASE + "ISIC_2019_Test_Metadata.csv")


def build_manifest(root: Path) -> pd.DataFrame:
    root = Path(root)
    rows, missing, found = [], [], False
    for part, split in PARTS.items():
        images = index_files([root / f"ISIC_2019_{part}_Input"], (".jpg", ".jpeg", ".png"))
        if not images:
            continue
        found = True
        gt_path = root / f"ISIC_2019_{part}_GroundTruth.csv"
        meta_path = root / f"ISIC_2019_{part}_Metadata.csv"
        meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False).set_index("image") if meta_path.is_file() \
            else pd.DataFrame()
        table = gt_path if gt_path.is_file() else None
        for iid, img, label in listed_images(table, images, CODES, missing, fill_absent={"UNK": "0"}):
            m = meta.loc[iid] if iid in meta.index else {}
            rows.append({"image": rel(img, root), "split": split if gt_path.is_file() else "none", "labels": label,
                         "lesion_id": clean(m.get("lesion_id", "")), "sex": clean_sex(m.get("sex", "")),
                         "age": clean_age(m.get("age_approx", "")), "site": clean(m.get("anatom_site_general", "")),
                         "modality": "dermoscopic", "image_id": iid})
    if not found:
        raise FileNotFoundError(f"no ISIC_2019_*_Input folder under {root}")
    return finish(rows, root, NAME, [normalise_disease_name(c) for c in CODES.values() if c], missing)


def download(out: Path) -> None:
    """Fetch the public ISIC 2019 archives (about 9 GB) into ``out``."""
    download_files(DOWNLOAD_URLS, out)
