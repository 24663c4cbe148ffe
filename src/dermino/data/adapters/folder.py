"""A user's own images: class sub-folders, or a CSV with a column mapping.

No download: the data is the user's. Two layouts::

    root/melanoma/a.jpg, root/Naevus/b.png ...     folder name = label (normalised)
    root/ + --csv labels.csv --map image=file,labels=diagnosis,sex=gender

With a CSV, ``mapping`` renames the user's columns to manifest columns (``image`` is
required; ``labels`` may hold several names separated by ';'); unmapped columns are kept
as extra columns. Image paths in the CSV are relative to ``root`` (or absolute).
"""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pandas as pd

from ..disease_names import normalise_labels
from ..images import IMAGE_EXTENSIONS
from ..manifest import COLUMNS, LABEL_SEP
from ._common import clean, clean_age, clean_sex, finish, rel

NAME = "folder"
log = logging.getLogger(__name__)


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
    rows, labels, skipped = [], set(), []
    found: list[tuple[Path, str]] = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        names = normalise_labels([sub.name])
        found += [(img, names[0] if names else "") for img in walk_images(sub, skipped)]
    for img, label in _once_per_file(found, skipped):
        rows.append({"image": rel(img, root), "split": "", "labels": label, "modality": modality})
        labels.add(label)
    if skipped:
        log.warning("%s: %d entries skipped (symlink loops, broken links, unreadable); first: %s", root,
                    len(skipped), "; ".join(f"{p} ({why})" for p, why in skipped[:3]))
    if not rows:
        raise ValueError(f"{root}: no images in class sub-folders (expected root/<label>/<image>)"
                         + (f"; {len(skipped)} entries skipped" if skipped else ""))
    df = finish(rows, root, source, sorted(labels), [])
    df.attrs["skipped_entries"] = [f"{p}\t{why}" for p, why in skipped]
    return df


def _once_per_file(found: list[tuple[Path, str]], skipped: list[tuple[str, str]]) -> list[tuple[Path, str]]:
    """One entry per file on disk (by resolved path), in walk order.

    A file reachable by two paths (a symlinked class folder, a linked image) would otherwise be
    indexed twice, under two labels and possibly two splits. The path without a link in it is
    kept (else the first one met); each other path is skipped with a warning naming both.
    """
    groups: dict[str, list[tuple[Path, str]]] = {}
    for img, label in found:
        groups.setdefault(os.path.realpath(img), []).append((img, label))
    keep: set[Path] = set()
    for real, entries in groups.items():
        direct = [e for e in entries if os.path.abspath(e[0]) == real]
        chosen = (direct or entries)[0]
        keep.add(chosen[0])
        for img, label in entries:
            if img != chosen[0]:
                why = f"same file as {chosen[0]} (indexed once, with label {chosen[1]!r}; this path says {label!r})"
                log.warning("%s: %s", img, why)
                skipped.append((str(img), why))
    return [(img, label) for img, label in found if img in keep]


def walk_images(folder: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    """Image files under ``folder``, following directory links once each.

    Nothing is dropped silently: a symlink loop, a broken link or an unreadable file or folder
    is appended to ``skipped`` as ``(path, reason)``.
    """
    found: list[Path] = []
    seen: set[str] = set()

    def visit(d: Path) -> None:
        real = os.path.realpath(d)
        parent = os.path.realpath(d.parent)
        if d != folder and (parent == real or parent.startswith(real.rstrip(os.sep) + os.sep)):
            skipped.append((str(d), "symlink loop (links to a folder that contains it)"))
            return
        if real in seen:
            skipped.append((str(d), "symlink to a folder already walked"))
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(d), key=lambda e: e.name)
        except OSError as exc:
            skipped.append((str(d), f"unreadable folder: {exc.strerror or exc}"))
            return
        for e in entries:
            path = Path(e.path)
            try:
                if e.is_dir(follow_symlinks=True):
                    visit(path)
                    continue
                if not e.is_file(follow_symlinks=True):
                    if e.is_symlink():
                        try:
                            os.stat(path)
                        except OSError as exc:
                            reason = "symlink loop" if exc.errno == errno.ELOOP else "broken symlink"
                            skipped.append((str(path), reason))
                    continue
            except OSError as exc:
                why = "symlink loop" if exc.errno == errno.ELOOP else f"unreadable: {exc.strerror or exc}"
                skipped.append((str(path), why))
                continue
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if not os.access(path, os.R_OK):
                skipped.append((str(path), "unreadable file (permission denied)"))
                continue
            found.append(path)

    visit(folder)
    return found


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
