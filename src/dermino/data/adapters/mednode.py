"""MED-NODE (Giotis et al., Expert Systems with Applications 2015): 70 melanoma and 100 naevus
clinical images, University Medical Center Groningen.

Official source: https://www.cs.rug.nl/~imaging/databases/melanoma_naevi/ (free for research;
cite Giotis et al. 2015).

Layout read (as published in ``complete_mednode_dataset.zip``)::

    complete_mednode_dataset/melanoma/*.jpg
    complete_mednode_dataset/naevus/*.jpg       (or melanoma/ and naevus/ directly under root)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..disease_names import normalise_disease_name
from ._common import download_files, finish, index_files, rel

NAME = "mednode"
CLASSES = {"melanoma": "melanoma", "naevus": "melanocytic nevus"}
DOWNLOAD_URLS = ("https://www.cs.rug.nl/~imaging/databases/melanoma_naevi/complete_mednode_dataset.zip",)


def build_manifest(root: Path) -> pd.DataFrame:
    root = Path(root)
    base = root / "complete_mednode_dataset" if (root / "complete_mednode_dataset").is_dir() else root
    if not all((base / c).is_dir() for c in CLASSES):
        raise FileNotFoundError(f"MED-NODE: expected folders melanoma/ and naevus/ under {base}")
    rows = []
    for folder, label in CLASSES.items():
        for stem, img in sorted(index_files([base / folder]).items()):
            rows.append({"image": rel(img, root), "split": "", "labels": normalise_disease_name(label),
                         "lesion_id": f"mednode_{folder}_{stem}", "modality": "clinical"})
    return finish(rows, root, NAME, [normalise_disease_name(v) for v in CLASSES.values()], [])


def download(out: Path) -> None:
    """Fetch complete_mednode_dataset.zip (about 20 MB) into ``out``."""
    download_files(DOWNLOAD_URLS, out)
