"""Derm7pt (Kawahara et al., IEEE JBHI 2019): 1,011 cases, each a clinical and a dermoscopic
image, with the 7-point checklist criteria.

Official source: https://derm.cs.sfu.ca (free for non-commercial research after registration;
cite Kawahara et al. 2019).

Layout read (as published in ``release_v0``)::

    meta/meta.csv       case_num,diagnosis,seven_point_score,pigment_network,streaks,pigmentation,
                        regression_structures,dots_and_globules,blue_whitish_veil,vascular_structures,
                        level_of_diagnostic_difficulty,elevation,location,sex,management,clinic,derm,notes
    meta/train_indexes.csv, valid_indexes.csv, test_indexes.csv    (column ``indexes``: rows of meta.csv)
    images/NEL/Nel026.jpg ...    (paths as written in the ``clinic`` and ``derm`` columns)

Each case gives two rows (``modality`` clinical / dermoscopic) sharing ``lesion_id`` so the
two views never land in different splits; the 7-point criteria are kept as columns. The four
melanoma rows by thickness become ``melanoma`` (the published text is kept in ``diagnosis_detail``).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..disease_names import normalise_disease_name
from ._common import clean, clean_sex, finish, rel

NAME = "derm7pt"
CRITERIA = ("pigment_network", "streaks", "pigmentation", "regression_structures", "dots_and_globules",
            "blue_whitish_veil", "vascular_structures")
INSTRUCTIONS = """Derm7pt is free for non-commercial research after registration:
  1. register at https://derm.cs.sfu.ca and download release_v0.zip
  2. unzip it, then: dermino data prepare derm7pt --root release_v0 --out derm7pt.csv"""
SPLIT_FILES = {"train": "train_indexes.csv", "val": "valid_indexes.csv", "test": "test_indexes.csv"}


def diagnosis_label(raw: str) -> str:
    """'melanoma (less than 0.76 mm)' -> 'melanoma' (thickness kept in ``diagnosis_detail``);
    'melanoma (in situ)' -> 'melanoma in situ'; others normalised as they are."""
    text = raw.strip().lower()
    if text == "melanoma (in situ)":
        return "melanoma in situ"
    if text.startswith("melanoma ("):
        return "melanoma"
    return normalise_disease_name(raw)


def build_manifest(root: Path) -> pd.DataFrame:
    root = Path(root)
    base = root if (root / "meta" / "meta.csv").is_file() else root / "release_v0"
    meta_path = base / "meta" / "meta.csv"
    if not meta_path.is_file():
        raise FileNotFoundError(f"Derm7pt meta.csv not found; looked for {root / 'meta' / 'meta.csv'} and {meta_path}")
    meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
    need = {"diagnosis", "clinic", "derm", *CRITERIA}
    if need - set(meta.columns):
        raise ValueError(f"{meta_path}: missing columns {sorted(need - set(meta.columns))}")
    split_of: dict[int, str] = {}
    for split, name in SPLIT_FILES.items():
        f = base / "meta" / name
        if f.is_file():
            for idx in pd.read_csv(f)["indexes"].astype(int):
                split_of[int(idx)] = split
    rows, missing = [], []
    for i, r in enumerate(meta.to_dict("records")):
        case = clean(r.get("case_num", "")) or str(i)
        for col, modality in (("clinic", "clinical"), ("derm", "dermoscopic")):
            img = base / "images" / r[col]
            if not r[col] or not img.is_file():
                missing.append(r[col] or f"case {case} {col}")
                continue
            row = {"image": rel(img, root), "split": split_of.get(i, ""),
                   "labels": diagnosis_label(r["diagnosis"]),
                   "diagnosis_detail": clean(r["diagnosis"]), "lesion_id": f"derm7pt_{case}",
                   "sex": clean_sex(r.get("sex", "")), "site": clean(r.get("location", "")), "modality": modality,
                   "seven_point_score": clean(r.get("seven_point_score", "")),
                   "diagnostic_difficulty": clean(r.get("level_of_diagnostic_difficulty", "")),
                   "elevation": clean(r.get("elevation", "")), "management": clean(r.get("management", ""))}
            row.update({c: clean(r[c]) for c in CRITERIA})
            rows.append(row)
    space = sorted({diagnosis_label(d) for d in meta["diagnosis"] if d})
    return finish(rows, root, NAME, space, missing)


def download(out: Path) -> None:
    print(INSTRUCTIONS)
