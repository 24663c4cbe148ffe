"""Helpers shared by the dataset adapters (finding files, finishing the table, downloads)."""

from __future__ import annotations

import logging
import shutil
import urllib.request
import zipfile
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ..disease_names import label_space as make_label_space
from ..images import IMAGE_EXTENSIONS
from ..manifest import COLUMNS, conform

log = logging.getLogger("dermino.data.adapters")


def clean(value: object) -> str:
    """Cell -> stripped string; None/NaN/'unknown' -> ''."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    text = str(value).strip()
    return "" if text.lower() in {"unknown", "nan", "none", "na", "n/a"} else text


def clean_age(value: object) -> str:
    """Age cell -> '55' / '47.5' / '' (ISIC writes 'unknown', HAM leaves it empty)."""
    text = clean(value)
    try:
        age = float(text)
    except ValueError:
        return ""
    return f"{age:g}"


_SEX = {"m": "male", "male": "male", "man": "male", "f": "female", "female": "female", "woman": "female"}


def clean_sex(value: object) -> str:
    """'Male' / 'f' / 'unknown' -> 'male' / 'female' / ''."""
    return _SEX.get(clean(value).lower(), "")


def index_files(folders: Iterable[Path], suffixes: Iterable[str] = IMAGE_EXTENSIONS, recursive: bool = False) -> dict[str, Path]:
    """``{file stem: path}`` over the folders that exist (first folder wins on clashes)."""
    suffixes = {s.lower() for s in suffixes}
    found: dict[str, Path] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        it = folder.rglob("*") if recursive else folder.iterdir()
        for p in sorted(it):
            if p.is_file() and p.suffix.lower() in suffixes:
                found.setdefault(p.stem, p)
    return found


def rel(path: Path | None, root: Path) -> str:
    if path is None:
        return ""
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def finish(rows: list[dict], root: Path, source: str, labels_space: Iterable[str] | str, missing: list[str]) -> pd.DataFrame:
    """Rows -> manifest: fixed columns first, ``label_space`` filled (labelled rows only), root and
    missing recorded.

    Rows whose image is absent are not in the table (nothing downstream could read them),
    but they are never dropped silently: they are counted in a WARNING and listed in
    ``df.attrs['missing_images']``.
    """
    df = conform(pd.DataFrame(rows, columns=list(dict.fromkeys([*COLUMNS, *(rows[0] if rows else {})]))))
    df = df.fillna("").astype(str) if len(df) else df
    space = labels_space if isinstance(labels_space, str) else make_label_space(labels_space)
    # An image with no annotation carries no supervision: its label space is empty, so the
    # knowledge loss ignores it instead of reading it as "negative for every disease".
    df["label_space"] = [space if labels else "" for labels in df["labels"]] if len(df) else space
    df["source"] = source
    df.attrs["root"] = str(root)
    df.attrs["missing_images"] = list(missing)
    if missing:
        log.warning(
            "%s: %d of %d listed images not found under %s (first: %s); listed in df.attrs['missing_images']",
            source, len(missing), len(missing) + len(df), root, ", ".join(missing[:3]),
        )
    return df


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def first_existing(candidates: Iterable[Path], what: str) -> Path:
    cands = list(candidates)
    for p in cands:
        if p.is_file():
            return p
    raise FileNotFoundError(f"{what} not found; looked for: " + ", ".join(str(p) for p in cands))


def download_files(urls: Iterable[str], out: Path, extract: bool = True) -> list[Path]:
    """Fetch each URL into ``out`` (skipping files already there) and unzip archives."""
    out.mkdir(parents=True, exist_ok=True)
    got = []
    for url in urls:
        dest = out / url.rsplit("/", 1)[-1].split("?")[0]
        if not dest.exists():
            log.info("downloading %s", url)
            tmp = dest.with_name(dest.name + ".part")
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
                shutil.copyfileobj(resp, fh, length=1 << 20)
            tmp.replace(dest)
        if extract and dest.suffix == ".zip":
            with zipfile.ZipFile(dest) as zf:
                zf.extractall(out)
        got.append(dest)
    return got
