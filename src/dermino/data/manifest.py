"""The manifest: one table, one row per image, that every part of dermino reads.

Adapters turn a public dataset (or a user's folder) into this table; pretraining,
evaluation and segmentation read only the table. Columns are fixed (see ``COLUMNS``)
so a manifest written by one tool is understood by all the others.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

#: Column order of a manifest; ``image`` is a path relative to the manifest's root.
COLUMNS: list[str] = [
    "image",        # path relative to root
    "source",       # dataset name, e.g. "ham10000"
    "split",        # train / val / test / none
    "labels",       # ';'-separated canonical disease names (may be empty)
    "label_space",  # ';'-separated labels this source can express
    "lesion_id",
    "patient_id",
    "sex",          # male / female / empty
    "age",          # float years or empty
    "fitzpatrick",  # 1-6 or empty
    "site",
    "mask",         # path relative to root, or empty
    "caption",
    "modality",     # dermoscopic / clinical
]
SPLITS = ("train", "val", "test", "none")
LABEL_SEP = ";"


def split_labels(value: object) -> list[str]:
    """``'melanoma;nevus'`` -> ``['melanoma', 'nevus']``; empty/NaN -> ``[]``."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return []
    return [v for v in (s.strip() for s in str(value).split(LABEL_SEP)) if v]


def join_labels(values: list[str]) -> str:
    return LABEL_SEP.join(dict.fromkeys(v for v in values if v))


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="object") for c in COLUMNS})


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing manifest columns (empty) and order them; extra columns are kept at the end."""
    out = df.copy()
    for col in COLUMNS:
        if col not in out.columns:
            out[col] = ""
    extra = [c for c in out.columns if c not in COLUMNS]
    return out[COLUMNS + extra].reset_index(drop=True)


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Load a CSV or Parquet manifest; string columns keep '' for missing, not NaN."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path}")
    if path.suffix.lower() in {".parquet", ".pq"}:
        df = pd.read_parquet(path)
    else:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df.attrs["root"] = str(path.parent)
    return df


def write_manifest(df: pd.DataFrame, path: str | Path, root: str | Path | None = None) -> Path:
    """Write CSV or Parquet by suffix, atomically (a crash never leaves half a file).

    Paths in ``image``/``mask`` are stored relative to the manifest file's directory, so a
    manifest and its images can move together. ``root`` is the directory the paths in
    ``df`` are currently relative to (default: ``df.attrs['root']`` or the output folder).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    out = conform(df)
    src_root = Path(root) if root is not None else Path(df.attrs.get("root", path.parent))
    for col in ("image", "mask"):
        out[col] = [_rebase(v, src_root, path.parent) for v in out[col]]
    if path.suffix.lower() in {".parquet", ".pq"}:
        out.astype(str).to_parquet(tmp, index=False)
    else:
        out.to_csv(tmp, index=False)
    tmp.replace(path)
    return path


def _rebase(value: object, src_root: Path, dst_root: Path) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value) == "":
        return ""
    p = Path(str(value))
    full = p if p.is_absolute() else src_root / p
    return os.path.relpath(os.path.abspath(full), os.path.abspath(dst_root))


def resolve(df: pd.DataFrame, value: object) -> Path | None:
    """Absolute path of an ``image``/``mask`` cell (``None`` when empty)."""
    if value is None or (isinstance(value, float) and pd.isna(value)) or str(value) == "":
        return None
    p = Path(str(value))
    return p if p.is_absolute() else manifest_root(df) / p


def manifest_root(df: pd.DataFrame, default: str | Path = ".") -> Path:
    """Directory that relative ``image``/``mask`` paths are resolved against."""
    return Path(df.attrs.get("root", default))
