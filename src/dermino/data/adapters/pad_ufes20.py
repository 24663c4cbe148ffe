"""PAD-UFES-20 (Pacheco et al., Data in Brief 2020): 2,298 smartphone images of 1,641 lesions
from 1,373 patients, 6 diagnoses, with the Fitzpatrick skin type.

Official source: https://data.mendeley.com/datasets/zr7vgbcyr2/1 (CC BY 4.0).

Layout read (as published)::

    metadata.csv   patient_id,lesion_id,smoke,drink,...,age,...,gender,...,fitspatrick,region,
                   diameter_1,diameter_2,diagnostic,itch,grew,hurt,changed,bleed,elevation,img_id,biopsed
    images/imgs_part_1/PAT_1516_1765_530.png   (and imgs_part_2, imgs_part_3; or images/ flat)

``diagnostic`` codes: ACK, BCC, MEL, NEV, SCC (incl. Bowen's disease), SEK. The column is
spelled ``fitspatrick`` in the release and becomes the manifest's ``fitzpatrick``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..disease_names import normalise_disease_name
from ._common import clean, clean_age, clean_sex, finish, index_files, rel, require_file

NAME = "pad_ufes20"
CODES = {"ACK": "actinic keratosis", "BCC": "basal cell carcinoma", "MEL": "melanoma", "NEV": "melanocytic nevus",
         "SCC": "squamous cell carcinoma", "SEK": "seborrheic keratosis"}
INSTRUCTIONS = """PAD-UFES-20 is public (CC BY 4.0) on Mendeley Data:
  1. open https://data.mendeley.com/datasets/zr7vgbcyr2/1 and press "Download All"
  2. unzip it and the three imgs_part_*.zip inside images/, then:
     dermino data prepare pad_ufes20 --root PAD-UFES-20 --out pad_ufes20.csv"""
CLINICAL = ("smoke", "drink", "skin_cancer_history", "cancer_history", "diameter_1", "diameter_2",
            "itch", "grew", "hurt", "changed", "bleed", "elevation", "biopsed")


def build_manifest(root: Path) -> pd.DataFrame:
    root = Path(root)
    meta_path = require_file(root / "metadata.csv", "PAD-UFES-20 metadata.csv")
    meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
    images = index_files([root / "images"], (".png", ".jpg"), recursive=True)
    rows, missing = [], []
    for i, r in enumerate(meta.to_dict("records")):
        code = clean(r.get("diagnostic", "")).upper()
        if code not in CODES:
            raise ValueError(f"{meta_path}: row {i} ({r.get('img_id')}): unknown diagnostic {code!r}")
        iid = Path(r["img_id"]).stem
        img = images.get(iid)
        if img is None:
            missing.append(r["img_id"])
            continue
        fitz = clean(r.get("fitspatrick", r.get("fitzpatrick", "")))
        row = {"image": rel(img, root), "split": "", "labels": normalise_disease_name(CODES[code]),
               "lesion_id": f"pad_{clean(r.get('lesion_id', ''))}", "patient_id": clean(r.get("patient_id", "")),
               "sex": clean_sex(r.get("gender", "")), "age": clean_age(r.get("age", "")),
               "fitzpatrick": fitz.split(".")[0] if fitz else "", "site": clean(r.get("region", "")).lower(),
               "modality": "clinical"}
        row.update({c: clean(r.get(c, "")) for c in CLINICAL})
        rows.append(row)
    return finish(rows, root, NAME, list(CODES.values()), missing)


def download(out: Path) -> None:
    """Mendeley's bulk download needs a browser session: print how to get it."""
    print(INSTRUCTIONS)
