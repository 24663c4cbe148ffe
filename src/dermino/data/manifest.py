"""The manifest: one table, one row per image, that every part of dermino reads.

Adapters turn a public dataset (or a user's folder) into this table; pretraining,
evaluation and segmentation read only the table. Columns are fixed (see ``COLUMNS``)
so a manifest written by one tool is understood by all the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from dermino.files import atomic_path

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
        try:
            df = pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types; all mean "not a readable Parquet file"
            raise ManifestReadError(f"{path}: cannot read this Parquet manifest: {exc}") from exc
    else:
        df = _read_csv(path)
    if "image" not in df.columns:  # every use of a manifest needs it: say so here, not with a bare KeyError later
        raise ManifestReadError(
            f"{path}: no 'image' column (columns: {', '.join(map(str, df.columns)) or 'none'}); a manifest holds "
            "one image path per row in 'image' (for your own table: dermino data prepare folder --csv FILE "
            "--map image=YOUR_COLUMN)")
    df.attrs["root"] = str(path.parent.resolve())  # absolute: paths resolve from any cwd
    return df


class ManifestReadError(ValueError):
    """A manifest file that cannot be parsed; the message names the file (and the line when known)."""


def _first_bad_utf8_line(path: Path) -> tuple[int, int, int]:
    """(line, column, byte) of the first byte sequence that is not UTF-8."""
    for n, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return n, exc.start + 1, line[exc.start]
    return 0, 0, 0


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except pd.errors.EmptyDataError as exc:
        raise ManifestReadError(f"{path}: the manifest is empty (expected a header line, e.g. 'image,labels,split')") from exc
    except UnicodeDecodeError as exc:
        line, col, byte = _first_bad_utf8_line(path)
        raise ManifestReadError(
            f"{path}, line {line}, column {col}: byte 0x{byte:02x} is not UTF-8; manifests are UTF-8 text "
            f"(re-save it as UTF-8, e.g. `iconv -f latin1 -t utf-8 {path.name} > fixed.csv`)"
        ) from exc
    except pd.errors.ParserError as exc:  # pandas names the line ("Expected 3 fields in line 5, saw 4")
        raise ManifestReadError(f"{path}: {str(exc).strip()}") from exc


def write_manifest(df: pd.DataFrame, path: str | Path, root: str | Path | None = None) -> Path:
    """Write CSV or Parquet by suffix, atomically (a crash never leaves half a file).

    Paths in ``image``/``mask`` are stored relative to the manifest file's directory, so a
    manifest and its images can move together. ``root`` is the directory the paths in
    ``df`` are currently relative to (default: ``df.attrs['root']`` or the output folder).
    """
    path = Path(path)
    out = conform(df)
    src_root = Path(root) if root is not None else Path(df.attrs.get("root", path.parent))
    for col in ("image", "mask"):
        out[col] = [_rebase(v, src_root, path.parent) for v in out[col]]
    with atomic_path(path) as tmp:
        if path.suffix.lower() in {".parquet", ".pq"}:
            out.astype(str).to_parquet(tmp, index=False)
        else:
            out.to_csv(tmp, index=False)
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


# --------------------------------------------------------------------------- validation

#: Columns a manifest cannot do without; the others are filled empty by ``conform``.
REQUIRED_COLUMNS: tuple[str, ...] = ("image", "source", "split", "labels", "label_space")
SEXES = ("male", "female", "")
MODALITIES = ("dermoscopic", "clinical", "")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest. ``row`` is the 0-based table row (CSV line = row + 2)."""

    message: str
    row: int | None = None
    column: str | None = None
    path: str | None = None

    def __str__(self) -> str:
        where = [f"row {self.row}" if self.row is not None else "", self.column or ""]
        head = ", ".join(w for w in where if w)
        tail = f" [{self.path}]" if self.path else ""
        return f"{head}: {self.message}{tail}" if head else f"{self.message}{tail}"


class ManifestError(ValueError):
    """A manifest is invalid; ``problems`` lists every problem found, not just the first."""

    def __init__(self, problems: list[Problem], name: str = "manifest"):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems[:200])
        more = f"\n  ... and {len(problems) - 200} more" if len(problems) > 200 else ""
        super().__init__(f"{name}: {len(problems)} problem(s):\n{lines}{more}")


def _cell(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    return str(value).strip()


def validate_manifest(df: pd.DataFrame, check_files: bool = True) -> list[Problem]:
    """Every problem of ``df`` at once (empty list = valid).

    Checks: required columns; empty ``image``; split in ``SPLITS``; labels inside the row's
    ``label_space``; sex / modality / fitzpatrick / age values; the same image listed twice;
    a lesion or patient appearing in more than one of train/val/test (a leak); and with
    ``check_files``, that every image and mask file exists (decoding is ``data check``'s job).
    """
    problems: list[Problem] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    for col in missing:
        problems.append(Problem(f"missing required column '{col}'", column=col))
    if "image" in missing:
        return problems
    get = {c: (df[c].map(_cell).tolist() if c in df.columns else [""] * len(df)) for c in COLUMNS}
    seen: dict[str, int] = {}
    for i in range(len(df)):
        image = get["image"][i]
        if not image:
            problems.append(Problem("empty image path", row=i, column="image"))
        else:
            full = str(resolve(df, image))
            if full in seen:
                problems.append(
                    Problem(f"duplicate image (also row {seen[full]})", row=i, column="image", path=full)
                )
            else:
                seen[full] = i
            if check_files and not Path(full).is_file():
                problems.append(Problem("image file not found", row=i, column="image", path=full))
        split = get["split"][i]
        if "split" in df.columns and split not in SPLITS:
            msg = "split not assigned (run assign_splits)" if not split else f"unknown split '{split}'"
            problems.append(Problem(f"{msg}; expected one of {', '.join(SPLITS)}", row=i, column="split"))
        space = split_labels(get["label_space"][i])
        if space:
            outside = [lab for lab in split_labels(get["labels"][i]) if lab not in space]
            if outside:
                problems.append(
                    Problem(
                        f"label(s) {outside} not in label_space {space}", row=i, column="labels"
                    )
                )
        if get["sex"][i] not in SEXES:
            problems.append(Problem(f"sex '{get['sex'][i]}' not one of male/female/empty", row=i, column="sex"))
        if get["modality"][i] not in MODALITIES:
            problems.append(
                Problem(f"modality '{get['modality'][i]}' not dermoscopic/clinical/empty", row=i, column="modality")
            )
        fitz = get["fitzpatrick"][i]
        if fitz and fitz not in {"1", "2", "3", "4", "5", "6", "1.0", "2.0", "3.0", "4.0", "5.0", "6.0"}:
            problems.append(Problem(f"fitzpatrick '{fitz}' not 1-6 or empty", row=i, column="fitzpatrick"))
        age = get["age"][i]
        if age:
            try:
                ok = 0 <= float(age) <= 130
            except ValueError:
                ok = False
            if not ok:
                problems.append(Problem(f"age '{age}' is not a number of years", row=i, column="age"))
        mask = get["mask"][i]
        if check_files and mask and not resolve(df, mask).is_file():
            problems.append(Problem("mask file not found", row=i, column="mask", path=str(resolve(df, mask))))
    for group_col in ("lesion_id", "patient_id"):
        problems.extend(_leaks(get[group_col], get["split"], get["source"], group_col))
    return problems


def _leaks(groups: list[str], splits: list[str], sources: list[str], column: str) -> list[Problem]:
    """A group (lesion/patient) must sit in a single one of train/val/test."""
    where: dict[tuple[str, str], dict[str, int]] = {}
    for i, (g, s, src) in enumerate(zip(groups, splits, sources, strict=True)):
        if g and s in ("train", "val", "test"):
            where.setdefault((src, g), {}).setdefault(s, i)
    out = []
    for (_, g), rows in where.items():
        if len(rows) > 1:
            first = min(rows.values())
            desc = ", ".join(f"{s} (row {r})" for s, r in sorted(rows.items(), key=lambda kv: kv[1]))
            out.append(Problem(f"{column} '{g}' crosses splits: {desc}", row=first, column=column))
    return out


def require_valid(df: pd.DataFrame, check_files: bool = True, name: str = "manifest") -> pd.DataFrame:
    """Return ``df`` unchanged if valid, else raise ``ManifestError`` listing every problem."""
    problems = validate_manifest(df, check_files=check_files)
    if problems:
        raise ManifestError(problems, name=name)
    return df
