"""DDI, Diverse Dermatology Images (Daneshjou et al., Science Advances 2022): 656 clinical
images, 570 patients, Fitzpatrick skin types grouped I-II / III-IV / V-VI, biopsy-proven.

Official source: https://ddi-dataset.github.io (Stanford AIMI; research use under the DDI
data use agreement, download after sign-in at stanfordaimi.azurewebsites.net).

Layout read (as published)::

    ddi_metadata.csv   ,DDI_ID,DDI_file,skin_tone,malignant,disease    (skin_tone 12 / 34 / 56)
    000001.png ...     (beside the CSV, or in images/)

DDI publishes only the Fitzpatrick *group*: it goes to the extra column ``fitzpatrick_group``
(I-II / III-IV / V-VI, what the fairness tables group by) and ``fitzpatrick`` stays empty.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..disease_names import normalise_disease_name
from ._common import clean, finish, index_files, rel, require_file

NAME = "ddi"
GROUPS = {"12": "I-II", "34": "III-IV", "56": "V-VI"}
INSTRUCTIONS = """DDI is distributed by Stanford AIMI under a research data use agreement:
  1. open https://ddi-dataset.github.io, follow the link to Stanford AIMI, sign in and accept the terms
  2. unzip ddidiversedermatologyimages.zip, then: dermino data prepare ddi --root DDI --out ddi.csv"""


def build_manifest(root: Path) -> pd.DataFrame:
    root = Path(root)
    meta_path = require_file(root / "ddi_metadata.csv", "DDI ddi_metadata.csv")
    meta = pd.read_csv(meta_path, dtype=str, keep_default_na=False)
    need = {"DDI_file", "skin_tone", "malignant", "disease"}
    if need - set(meta.columns):
        raise ValueError(f"{meta_path}: missing columns {sorted(need - set(meta.columns))}")
    images = {p.name: p for p in index_files([root, root / "images"], (".png", ".jpg")).values()}
    rows, missing = [], []
    for i, r in enumerate(meta.to_dict("records")):
        group = GROUPS.get(clean(r["skin_tone"]))
        if group is None:
            raise ValueError(f"{meta_path}: row {i} ({r['DDI_file']}): skin_tone {r['skin_tone']!r} not 12/34/56")
        img = images.get(r["DDI_file"])
        if img is None:
            missing.append(r["DDI_file"])
            continue
        rows.append({"image": rel(img, root), "split": "", "labels": normalise_disease_name(r["disease"]),
                     "modality": "clinical", "fitzpatrick_group": group,
                     "malignant": str(clean(r["malignant"]).lower() == "true"),
                     "image_id": clean(r.get("DDI_ID", ""))})
    space = sorted({normalise_disease_name(d) for d in meta["disease"] if d})
    return finish(rows, root, NAME, space, missing)


def download(out: Path) -> None:
    print(INSTRUCTIONS)
