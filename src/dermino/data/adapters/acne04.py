"""ACNE04 (Wu et al., ICCV 2019): 1,457 facial images graded for acne severity by the Hayashi
criterion (0 mild, 1 moderate, 2 severe, 3 very severe), with lesion counts.

Official source: https://github.com/xpwu95/LDL (download links in its README; for research
use only, cite Wu et al. 2019).

Layout read (as published in ``Classification/``)::

    Classification/JPEGImages/levle0_1.jpg ...             (sic: "levle")
    Classification/NNEW_trainval_0.txt, NNEW_test_0.txt    lines "levle0_1.jpg 0 3": file, grade, count

``labels`` is ``acne vulgaris`` for every image; the ordinal target is the extra column
``severity`` (0-3, see ``severity_name``), scored with quadratic-weighted kappa
(``dermino.evaluate.metrics.quadratic_weighted_kappa``). ``fold`` picks the 5 published folds.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ._common import finish, index_files, rel

NAME = "acne04"
SEVERITY = ("mild", "moderate", "severe", "very severe")
INSTRUCTIONS = """ACNE04 is for research use: follow the download links in https://github.com/xpwu95/LDL,
unzip Classification.tar, then: dermino data prepare acne04 --root ACNE04 --out acne04.csv"""


def build_manifest(root: Path, fold: int | str = 0) -> pd.DataFrame:
    root = Path(root)
    base = root / "Classification" if (root / "Classification").is_dir() else root
    images = {p.name: p for p in index_files([base / "JPEGImages"], (".jpg", ".jpeg", ".png")).values()}
    lists = {"train": base / f"NNEW_trainval_{fold}.txt", "test": base / f"NNEW_test_{fold}.txt"}
    if not any(f.is_file() for f in lists.values()):
        raise FileNotFoundError(f"ACNE04: no NNEW_trainval_{fold}.txt / NNEW_test_{fold}.txt under {base}")
    rows, missing = [], []
    for split, f in lists.items():
        if not f.is_file():
            continue
        for n, line in enumerate(f.read_text().splitlines()):
            parts = line.split()
            if not parts:
                continue
            if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) >= len(SEVERITY):
                raise ValueError(f"{f}: line {n + 1}: expected 'file grade(0-3) [count]', got {line!r}")
            img = images.get(parts[0])
            if img is None:
                missing.append(parts[0])
                continue
            grade = int(parts[1])
            rows.append({"image": rel(img, root), "split": split, "labels": "acne vulgaris",
                         "modality": "clinical", "severity": str(grade), "severity_name": SEVERITY[grade],
                         "lesion_count": parts[2] if len(parts) > 2 else ""})
    return finish(rows, root, NAME, ["acne vulgaris"], missing)


def download(out: Path) -> None:
    print(INSTRUCTIONS)
