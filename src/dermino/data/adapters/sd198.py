"""SD-198 (Sun et al., ECCV 2016): 6,584 clinical images of 198 skin diseases (from DermQuest).

Official source: https://xiaoxiaosun.com/docs/2016-eccv-sd198.pdf (download link in the paper's
project page; for non-commercial research only, images remain the property of DermQuest).

Layout read (as published)::

    images/Acne_Keloidalis_Nuchae/*.jpg ...          one folder per disease
    8_2_split/train_0.txt, 8_2_split/val_0.txt       lines "Class_Name/file.jpg <index>" (optional;
                                                     ``fold`` picks train_<fold>.txt / val_<fold>.txt)

The folder name is the disease ("Acne_Keloidalis_Nuchae" -> "acne keloidalis nuchae").
Without the split files every row gets an empty split (assigned later).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..disease_names import normalise_disease_name
from ._common import finish, rel

NAME = "sd198"
INSTRUCTIONS = """SD-198 is for non-commercial research: download SD-198.zip from the authors' page
(linked from https://xiaoxiaosun.com/docs/2016-eccv-sd198.pdf), unzip it, then:
  dermino data prepare sd198 --root SD-198 --out sd198.csv"""


def _disease(folder: str) -> str:
    return normalise_disease_name(folder.replace("_", " "))


def build_manifest(root: Path, fold: int | str = 0) -> pd.DataFrame:
    root = Path(root)
    images_dir = root / "images"
    if not images_dir.is_dir():
        raise FileNotFoundError(f"SD-198: no images/ folder under {root}")
    split_of: dict[str, str] = {}
    for split, name in (("train", f"train_{fold}.txt"), ("test", f"val_{fold}.txt")):
        f = root / "8_2_split" / name
        if f.is_file():
            for line in f.read_text().splitlines():
                if line.strip():
                    split_of[line.split()[0]] = split
    rows = []
    classes = sorted(d.name for d in images_dir.iterdir() if d.is_dir())
    for cls in classes:
        for img in sorted((images_dir / cls).iterdir()):
            if img.suffix.lower() not in (".jpg", ".jpeg", ".png"):
                continue
            key = f"{cls}/{img.name}"
            rows.append({"image": rel(img, root), "split": split_of.get(key, ""), "labels": _disease(cls),
                         "modality": "clinical"})
    return finish(rows, root, NAME, [_disease(c) for c in classes], [])


def download(out: Path) -> None:
    print(INSTRUCTIONS)
