"""HAM10000 (Tschandl et al., Sci Data 2018): 10,015 dermoscopic images, 7 diagnoses.

Official source: https://doi.org/10.7910/DVN/DBW86T (Harvard Dataverse; CC BY-NC 4.0),
lesion masks: https://doi.org/10.7910/DVN/DBW86T (HAM10000_segmentations_lesion_tschandl.zip).

Layout read (the published one, or a flattened copy with all images in one folder)::

    HAM10000_metadata.csv            lesion_id,image_id,dx,dx_type,age,sex,localization
    images/ISIC_0024306.jpg          or HAM10000_images_part_1/ + HAM10000_images_part_2/
    masks_200x150/ISIC_0024306_segmentation.png   or HAM10000_segmentations_lesion_tschandl/

Images of one lesion share a ``lesion_id``: split on it. ``dx_type`` (histo / follow_up /
consensus / confocal) is kept as an extra column: it is how the diagnosis was confirmed,
a natural "site" split for federated experiments.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..disease_names import normalise_disease_name
from ._common import clean, clean_age, clean_sex, download_files, finish, first_existing, index_files, rel

NAME = "ham10000"
DX_CODES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
IMAGE_DIRS = ("images", "HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images", "ISIC2018_Task3_Training_Input")
MASK_DIRS = ("masks_200x150", "masks", "HAM10000_segmentations_lesion_tschandl")
DOWNLOAD_URLS: tuple[str, ...] = ()  # Dataverse needs the terms accepted in a browser
INSTRUCTIONS = """HAM10000 is distributed by Harvard Dataverse under CC BY-NC 4.0 after accepting its terms:
  1. open https://doi.org/10.7910/DVN/DBW86T and download HAM10000_metadata (csv),
     HAM10000_images_part_1.zip, HAM10000_images_part_2.zip and (optional)
     HAM10000_segmentations_lesion_tschandl.zip
  2. unzip them all into one folder, then: dermino data prepare ham10000 --root THAT_FOLDER --out ham10000.csv"""


def build_manifest(root: Path, metadata: str | None = None) -> pd.DataFrame:
    """Manifest of a HAM10000 folder (``metadata``: CSV name if not the official one)."""
    root = Path(root)
    meta_path = first_existing(
        [root / metadata] if metadata else [root / "HAM10000_metadata.csv", root / "HAM10000_metadata"],
        "HAM10000 metadata CSV",
    )
    meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
    need = {"lesion_id", "image_id", "dx"}
    if not need <= set(meta.columns):
        raise ValueError(f"{meta_path}: expected columns {sorted(need)}, found {list(meta.columns)}")
    images = index_files(root / d for d in IMAGE_DIRS)
    masks = index_files(root / d for d in MASK_DIRS)
    rows, missing = [], []
    for i, r in enumerate(meta.itertuples(index=False)):
        dx = clean(r.dx).lower()
        if dx not in DX_CODES:
            raise ValueError(f"{meta_path}: row {i}: unknown dx '{r.dx}' (expected one of {DX_CODES})")
        img = images.get(r.image_id)
        if img is None:
            missing.append(r.image_id)
            continue
        mask = masks.get(f"{r.image_id}_segmentation")
        rows.append(
            {
                "image": rel(img, root),
                "split": "",
                "labels": normalise_disease_name(dx),
                "lesion_id": clean(r.lesion_id),
                "patient_id": "",
                "sex": clean_sex(getattr(r, "sex", "")),
                "age": clean_age(getattr(r, "age", "")),
                "site": clean(getattr(r, "localization", "")),
                "mask": rel(mask, root) if mask else "",
                "modality": "dermoscopic",
                "image_id": r.image_id,
                "dx": dx,
                "dx_type": clean(getattr(r, "dx_type", "")),
            }
        )
    return finish(rows, root, NAME, DX_CODES, missing)


def download(out: Path) -> None:
    """HAM10000 needs its terms accepted in a browser: print how to get it."""
    if DOWNLOAD_URLS:
        download_files(DOWNLOAD_URLS, out)
    print(INSTRUCTIONS)
