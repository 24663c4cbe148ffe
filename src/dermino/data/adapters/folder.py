"""A user's own images: class sub-folders, or a CSV with a column mapping.

No download: the data is the user's. Two layouts::

    root/melanoma/a.jpg, root/Naevus/b.png ...     folder name = label (normalised)
    root/ + --csv labels.csv --map image=file,labels=diagnosis,sex=gender

With a CSV, ``mapping`` renames the user's columns to manifest columns (``image`` is
required; ``labels`` may hold several names separated by ';'); unmapped columns are kept
as extra columns. Image paths in the CSV are relative to ``root`` (or absolute).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..disease_names import normalise_labels
from ..images import IMAGE_EXTENSIONS
from ..manifest import COLUMNS, LABEL_SEP
from ._common import clean, clean_age, clean_sex, finish, rel

NAME = "folder"


def parse_mapping(text: str | dict[str, str] | None) -> dict[str, str]:
    """``'image=file,labels=diagnosis'`` -> ``{'image': 'file', 'labels': 'diagnosis'}``."""
    if not text:
        return {}
    if isinstance(text, dict):
        pairs = dict(text)
    else:
        pairs = {}
        for item in str(text).split(","):
            if not item.strip():
                continue
            if "=" not in item:
                raise ValueError(f"bad --map entry '{item}': expected manifest_column=your_column")
            k, v = (s.strip() for s in item.split("=", 1))
            pairs[k] = v
    unknown = [k for k in pairs if k not in COLUMNS]
    if unknown:
        raise ValueError(f"--map: {unknown} are not manifest columns ({', '.join(COLUMNS)})")
    return pairs


def build_manifest(
    root: Path,
    csv: str | None = None,
    map: str | dict[str, str] | None = None,  # noqa: A002 - mirrors the --map option
    source: str = NAME,
    modality: str = "clinical",
) -> pd.DataFrame:
    """Manifest of a user folder (sub-folders as classes) or of a user CSV (``csv`` + ``map``)."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"folder not found: {root}")
    if csv:
        return _from_csv(root, Path(csv) if Path(csv).is_absolute() else root / csv, parse_mapping(map), source, modality)
    rows, labels = [], set()
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        names = normalise_labels([sub.name])
        label = names[0] if names else ""
        for img in sorted(sub.rglob("*")):
            if img.is_file() and img.suffix.lower() in IMAGE_EXTENSIONS:
                rows.append({"image": rel(img, root), "split": "", "labels": label, "modality": modality})
                labels.add(label)
    if not rows:
        raise ValueError(f"{root}: no images in class sub-folders (expected root/<label>/<image>)")
    return finish(rows, root, source, sorted(labels), [])


def _from_csv(root: Path, path: Path, mapping: dict[str, str], source: str, modality: str) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"CSV not found: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    mapping.setdefault("image", "image")
    absent = [v for v in mapping.values() if v not in table.columns]
    if absent:
        raise ValueError(f"{path}: column(s) {absent} from --map not in the CSV ({list(table.columns)})")
    inverse = {v: k for k, v in mapping.items()}
    rows, missing, space = [], [], set()
    for i, r in enumerate(table.to_dict("records")):
        row = {inverse.get(k, k): v for k, v in r.items()}
        image = clean(row.get("image", ""))
        if not image:
            raise ValueError(f"{path}: row {i}: empty image path")
        p = Path(image) if Path(image).is_absolute() else root / image
        if not p.is_file():
            missing.append(image)
            continue
        labels = normalise_labels(str(row.get("labels", "")).split(LABEL_SEP))
        space.update(labels)
        row.update({
            "image": rel(p, root),
            "labels": LABEL_SEP.join(labels),
            "split": clean(row.get("split", "")).lower(),
            "sex": clean_sex(row.get("sex", "")),
            "age": clean_age(row.get("age", "")),
            "modality": clean(row.get("modality", "")) or modality,
        })
        rows.append(row)
    return finish(rows, root, source, sorted(space), missing)
