"""ISIC 2017 Challenge, Part 3 lesion classification (Codella et al., ISBI 2018).

Official source: https://challenge.isic-archive.com/data/#2017 (ISIC archive terms, mostly
CC-0 / CC-BY-NC). 2,000 training, 150 validation and 600 test dermoscopic images.

Layout read (official names; ``*_Classes.csv`` is the name some redistributed copies use)::

    ISIC-2017_Training_Data/ISIC_0000000.jpg      (+ *_superpixels.png, ignored)
    ISIC-2017_Training_Part3_GroundTruth.csv      or ISIC-2017_Training_Classes.csv
    ISIC-2017_Training_Data_metadata.csv          (here or inside the data folder)
    ISIC-2017_Training_Part1_GroundTruth/ISIC_0000000_segmentation.png   (optional masks)
    ... the same for Validation and Test_v2

Labels, as the official task defines them: ``melanoma`` = 1 -> melanoma;
``seborrheic_keratosis`` = 1 -> seborrheic keratosis; both 0 -> (melanocytic) nevus. When
the classes file has no ``seborrheic_keratosis`` column (as in some redistributed copies), the negative
class cannot be told apart and is labelled ``nevus or seborrheic keratosis``. Official
splits are kept: train, val, and test when its ground truth is present; test images
without labels get split ``none`` (usable for self-supervised pretraining only).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import clean_age, clean_sex, download_files, finish, index_files, rel

NAME = "isic2017"
MEL, SK, NEV, NEG = "melanoma", "seborrheic keratosis", "melanocytic nevus", "nevus or seborrheic keratosis"
PARTS = {"Training": "train", "Validation": "val", "Test_v2": "test"}
_BASE = "https://isic-challenge-data.s3.amazonaws.com/2017/"
DOWNLOAD_URLS = tuple(
    _BASE + f"ISIC-2017_{part}_{kind}"
    for part in PARTS
    for kind in ("Data.zip", "Part1_GroundTruth.zip", "Part3_GroundTruth.csv")
)


def _first(root: Path, names: list[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_file()), None)


def build_manifest(root: Path, include_test: bool = True) -> pd.DataFrame:
    """Manifest of an ISIC 2017 folder (``include_test=False`` leaves the test images out)."""
    root = Path(root)
    rows, missing, has_sk, found_any = [], [], False, False
    for part, split in PARTS.items():
        if part.startswith("Test") and not include_test:
            continue
        data_dir = root / f"ISIC-2017_{part}_Data"
        if not data_dir.is_dir():
            continue
        found_any = True
        images = {k: v for k, v in index_files([data_dir], (".jpg", ".jpeg", ".png")).items()
                  if not k.endswith("_superpixels")}
        masks = index_files([root / f"ISIC-2017_{part}_Part1_GroundTruth"], (".png",))
        gt_path = _first(root, [f"ISIC-2017_{part}_Part3_GroundTruth.csv", f"ISIC-2017_{part}_Classes.csv"])
        meta_path = _first(root, [f"ISIC-2017_{part}_Data_metadata.csv"]) or _first(
            data_dir, [f"ISIC-2017_{part}_Data_metadata.csv"]
        )
        meta = (pd.read_csv(meta_path, dtype=str, keep_default_na=False).set_index("image_id")
                if meta_path else pd.DataFrame())
        if gt_path is not None:
            gt = pd.read_csv(gt_path, dtype=str, keep_default_na=False)
            if "image_id" not in gt.columns or "melanoma" not in gt.columns:
                raise ValueError(f"{gt_path}: expected columns image_id, melanoma; found {list(gt.columns)}")
            has_sk = has_sk or "seborrheic_keratosis" in gt.columns
            listed = gt.to_dict("records")
        else:  # unlabelled part: every image in the folder
            listed = [{"image_id": k} for k in sorted(images)]
        for i, r in enumerate(listed):
            iid = r["image_id"]
            img = images.get(iid)
            if img is None:
                missing.append(iid)
                continue
            labels = _label(r, gt_path, i) if gt_path is not None else ""
            m = meta.loc[iid] if iid in meta.index else {}
            mask = masks.get(f"{iid}_segmentation")
            rows.append({
                "image": rel(img, root),
                "split": split if gt_path is not None else "none",
                "labels": labels,
                "lesion_id": "",
                "sex": clean_sex(m.get("sex", "")),
                "age": clean_age(m.get("age_approximate", "")),
                "mask": rel(mask, root) if mask else "",
                "modality": "dermoscopic",
                "image_id": iid,
                "official_split": split,
            })
    if not found_any:
        raise FileNotFoundError(f"no ISIC-2017_*_Data folder under {root}")
    space = [MEL, SK, NEV] if has_sk else [MEL, NEG]
    if not has_sk:  # labels were written without knowing; keep the two-class vocabulary
        for r in rows:
            if r["labels"] in (SK, NEV):
                r["labels"] = NEG
    return finish(rows, root, NAME, space, missing)


def _label(r: dict, path: Path, i: int) -> str:
    try:
        mel = float(r["melanoma"])
        sk = float(r.get("seborrheic_keratosis", 0) or 0)
    except ValueError as exc:
        raise ValueError(f"{path}: row {i} ({r.get('image_id')}): non-numeric class value") from exc
    if mel >= 0.5 and sk >= 0.5:
        raise ValueError(f"{path}: row {i} ({r['image_id']}): both melanoma and seborrheic_keratosis set")
    if mel >= 0.5:
        return MEL
    if "seborrheic_keratosis" not in r:
        return NEG
    return SK if sk >= 0.5 else NEV


def download(out: Path) -> None:
    """Fetch the public ISIC 2017 archives (about 6 GB) into ``out`` and unzip them."""
    download_files(DOWNLOAD_URLS, out)
