"""Captions from real annotations, and image-caption pairs for training.

Why templates over the structured annotations: PH2's dermoscopic criteria and HAM10000's
metadata are expert labels, so a caption written from them states only what an expert
recorded. Several templates with varied wording (picked per image by a seeded hash) keep
the language model from learning one fixed sentence. Absent PH2 criteria are stated as
"no X" / "without X" so that ``dermino.caption.clinical`` can parse a caption back into
criteria and score generated captions for clinical correctness.

User data in the SkinCAP style (a CSV of image path + caption, optionally a disease) becomes
a manifest with the ``caption`` column filled, so everything downstream reads one table.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermino.data.manifest import conform, read_manifest, resolve, split_labels

log = logging.getLogger(__name__)

# ------------------------------------------------------------------ PH2 criteria wording

#: PH2 codes -> phrase when present; None = absent (stated as "no <absent phrase>")
PH2_FINDINGS: dict[str, dict[str, str | None]] = {
    "pigment_network": {"T": "a typical pigment network", "AT": "an atypical pigment network", "A": None},
    "dots_globules": {"T": "typical dots and globules", "AT": "atypical dots and globules", "A": None},
    "streaks": {"P": "streaks", "A": None},
    "regression_areas": {"P": "regression areas", "A": None},
    "blue_whitish_veil": {"P": "a blue-whitish veil", "A": None},
}
PH2_ABSENT: dict[str, str] = {
    "pigment_network": "pigment network",
    "dots_globules": "dots or globules",
    "streaks": "streaks",
    "regression_areas": "regression areas",
    "blue_whitish_veil": "blue-whitish veil",
}
PH2_ASYMMETRY = {"0": "symmetric", "1": "asymmetric in one axis", "2": "asymmetric in both axes"}
PH2_COLOURS = {
    "color_white": "white",
    "color_red": "red",
    "color_light_brown": "light brown",
    "color_dark_brown": "dark brown",
    "color_blue_gray": "blue-gray",
    "color_black": "black",
}

HAM_CONFIRMATION = {
    "histo": "histopathology",
    "follow_up": "follow-up examination",
    "consensus": "expert consensus",
    "confocal": "in-vivo confocal microscopy",
}


def _pick(key: str, n: int, seed: int) -> int:
    """A stable template choice per image (same caption for the same image and seed)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % n


def _join(items: list[str], last: str = "and") -> str:
    if not items:
        return ""
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {last} " + items[-1]


def _article(noun: str) -> str:
    vowel = noun[:1].lower() in "aeiou" or re.match(r"(8|11|18)(\D|$)", noun) is not None  # "an 80-year-old"
    return ("an " if vowel else "a ") + noun


def _truthy(value: object) -> bool:
    return str(value).strip().lower() in {"true", "1", "x", "yes"}


def short_caption(row: dict, seed: int = 0) -> str:
    """One short sentence: the diagnosis (and PH2's symmetry): for small models and short contexts."""
    diagnosis = (split_labels(row.get("labels")) or [""])[0].replace(" / ", " or ")
    if not diagnosis:
        return ""
    asym = PH2_ASYMMETRY.get(str(row.get("asymmetry", "")).strip().split(".")[0], "")
    key = str(row.get("image_id") or row.get("image") or "")
    templates = [
        lambda: f"Dermoscopy of {_article(diagnosis)}" + (f", {asym}." if asym else "."),
        lambda: f"{_article(diagnosis).capitalize()} under dermoscopy" + (f", {asym}." if asym else "."),
        lambda: f"Diagnosis: {diagnosis}" + (f"; the lesion is {asym}." if asym else "."),
    ]
    return templates[_pick(key, len(templates), seed)]()


def ph2_caption(row: dict, seed: int = 0) -> str:
    """A caption stating the diagnosis and every PH2 criterion of one row ('' if no diagnosis)."""
    diagnosis = (split_labels(row.get("labels")) or [""])[0]
    if not diagnosis:
        return ""
    present, absent = [], []
    for crit, codes in PH2_FINDINGS.items():
        code = str(row.get(crit, "") or "").strip().upper()
        if code not in codes:
            continue  # criterion not recorded for this image: say nothing about it
        phrase = codes[code]
        (present if phrase else absent).append(phrase or PH2_ABSENT[crit])
    asym = PH2_ASYMMETRY.get(str(row.get("asymmetry", "")).strip().split(".")[0], "")
    colours = [name for col, name in PH2_COLOURS.items() if _truthy(row.get(col, ""))]
    pos = _join(present) or "no specific structures"
    neg = ", ".join(f"no {a}" for a in absent)
    without = _join([f"without {a}" for a in absent]) if absent else ""
    col = _join(colours) if colours else "not recorded"
    key = str(row.get("image_id") or row.get("image") or "")
    templates = [
        lambda: f"Dermoscopy of {_article(diagnosis)}. The lesion is {asym or 'of unrecorded symmetry'}, "
        f"with {pos}" + (f"; {neg}" if neg else "") + f". Colours: {col}.",
        lambda: f"{_article(diagnosis).capitalize()} seen under dermoscopy: {asym or 'symmetry not recorded'} "
        f"lesion showing {pos}" + (f", {without}" if without else "") + f". Colours present: {col}.",
        lambda: f"This dermoscopic image shows {_article(asym + ' lesion' if asym else 'lesion')} with {pos}"
        + (f"; {neg}" if neg else "") + f". Colours: {col}. Diagnosis: {diagnosis}.",
        lambda: f"Findings: {asym or 'symmetry not recorded'}; {pos}" + (f"; {neg}" if neg else "")
        + f"; colours {col}. Clinical diagnosis: {diagnosis}.",
    ]
    return templates[_pick(key, len(templates), seed)]()


def ham10000_caption(row: dict, seed: int = 0) -> str:
    """A caption from HAM10000 metadata: diagnosis, how it was confirmed, site, age, sex."""
    diagnosis = (split_labels(row.get("labels")) or [""])[0]
    if not diagnosis:
        return ""
    diagnosis = diagnosis.replace(" / ", " or ")
    confirmed = HAM_CONFIRMATION.get(str(row.get("dx_type", "")).strip(), "")
    site = str(row.get("site", "") or "").strip()
    site = "" if site in ("unknown", "nan") else site
    try:
        age = int(float(row.get("age") or ""))
    except ValueError:
        age = None
    sex = str(row.get("sex", "") or "").strip()
    person = " ".join(p for p in (f"{age}-year-old" if age is not None else "", sex or "patient") if p)
    where = f" on the {site}" if site else ""
    who = f" of {_article(person)}" if (age is not None or sex) else ""
    conf = f", confirmed by {confirmed}" if confirmed else ""
    key = str(row.get("image_id") or row.get("image") or "")
    templates = [
        lambda: f"Dermoscopy of {_article(diagnosis)}{where}{who}{conf}.",
        lambda: f"{_article(diagnosis).capitalize()}{where}{who}; the diagnosis was established by "
        f"{confirmed or 'an unrecorded method'}.",
        lambda: f"This dermoscopic image shows a lesion{where}{who}. Diagnosis: {diagnosis}{conf}.",
        lambda: f"Lesion{where}{who}, diagnosed as {diagnosis}{conf}.",
    ]
    return templates[_pick(key, len(templates), seed)]()


CAPTIONERS = {"ph2": ph2_caption, "ham10000": ham10000_caption}


@dataclass
class CaptionStats:
    written: int = 0
    kept: int = 0  # rows that already had a caption (not overwritten)
    no_annotation: int = 0  # rows of a source we cannot caption (left empty)


def make_captions(
    df: pd.DataFrame, seed: int = 0, overwrite: bool = False, short: bool = False
) -> tuple[pd.DataFrame, CaptionStats]:
    """Fill ``caption`` from the annotations of PH2 and HAM10000 rows (others are left as they are).

    ``short``: one sentence naming the diagnosis (PH2: and the symmetry) instead of every criterion.
    """
    out = conform(df)
    out.attrs.update(df.attrs)
    stats = CaptionStats()
    captions = []
    for row in out.to_dict("records"):
        old = str(row.get("caption") or "").strip()
        if old and old.lower() != "nan" and not overwrite:
            stats.kept += 1
            captions.append(old)
            continue
        maker = CAPTIONERS.get(str(row.get("source", "")))
        maker = short_caption if (short and maker) else maker
        text = maker(row, seed) if maker else ""
        if text:
            stats.written += 1
        else:
            stats.no_annotation += 1
        captions.append(text)
    out["caption"] = captions
    return out, stats


# ------------------------------------------------------------------ user CSV of pairs

IMAGE_COLUMNS = ("image", "skincap_file_path", "image_path", "file", "filename", "path")
CAPTION_COLUMNS = ("caption", "caption_en", "caption_zh_polish_en", "text", "report")
LABEL_COLUMNS = ("labels", "disease", "diagnosis", "label")


def _find(columns: list[str], wanted: tuple[str, ...], given: str | None, what: str, path: Path) -> str | None:
    if given:
        if given not in columns:
            raise KeyError(f"{path}: no column {given!r} for the {what}; columns: {columns}")
        return given
    lower = {c.lower(): c for c in columns}
    return next((lower[w] for w in wanted if w in lower), None)


def read_pairs_csv(
    path: str | Path,
    root: str | Path | None = None,
    image_col: str | None = None,
    caption_col: str | None = None,
    label_col: str | None = None,
    source: str | None = None,
) -> pd.DataFrame:
    """A manifest from a CSV of (image, caption[, disease]) pairs, e.g. SkinCAP's.

    Image paths are relative to ``root`` (default: the CSV's folder). Columns are found by
    their usual names (``image``/``skincap_file_path`` …, ``caption``/``caption_zh_polish_en``
    …) unless named. Splits are left empty for ``assign_splits``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption CSV not found: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    cols = list(table.columns)
    img = _find(cols, IMAGE_COLUMNS, image_col, "image path", path)
    cap = _find(cols, CAPTION_COLUMNS, caption_col, "caption", path)
    if img is None or cap is None:
        raise KeyError(
            f"{path}: need an image column (one of {IMAGE_COLUMNS}) and a caption column "
            f"(one of {CAPTION_COLUMNS}); found {cols} (name them with --image-col/--caption-col)"
        )
    lab = _find(cols, LABEL_COLUMNS, label_col, "label", path)
    base = Path(root) if root is not None else path.parent
    labels = table[lab].str.strip().str.lower() if lab else ""
    df = pd.DataFrame(
        {
            "image": [str((base / p).resolve()) if p else "" for p in table[img].str.strip()],
            "source": source or path.stem,
            "split": "",
            "labels": labels,
            "label_space": ";".join(sorted(set(labels))) if lab else "",
            "lesion_id": table[img].str.strip(),
            "caption": table[cap].str.strip(),
        }
    )
    out = conform(df)
    out.attrs["root"] = str(base.resolve())
    return out


# ------------------------------------------------------------------ examples for training


@dataclass(frozen=True)
class CaptionExample:
    image: Path
    caption: str
    labels: tuple[str, ...]
    row: int  # manifest row
    source: str = ""


def caption_examples(df: pd.DataFrame, split: str | None = None) -> tuple[list[CaptionExample], int]:
    """``(examples, skipped)``: rows of ``split`` with a caption; empty/missing captions are counted."""
    examples, skipped = [], 0
    has_caption = "caption" in df.columns
    for i, row in enumerate(df.to_dict("records")):
        if split is not None and str(row.get("split", "")) != split:
            continue
        text = str(row.get("caption", "") if has_caption else "").strip()
        if not text or text.lower() == "nan":
            skipped += 1
            continue
        path = resolve(df, row.get("image"))
        if path is None:
            skipped += 1
            continue
        examples.append(
            CaptionExample(Path(os.path.normpath(path)), text, tuple(split_labels(row.get("labels"))), i, str(row.get("source", "")))
        )
    if skipped:
        log.warning("%d image(s)%s have no caption and are skipped", skipped, f" of split {split!r}" if split else "")
    return examples, skipped


def load_examples(manifests: list[str], split: str, limit: int = 0, seed: int = 0) -> tuple[list[CaptionExample], int]:
    """Pairs of ``split`` from every manifest (skipped = rows without a caption), optionally subsampled."""
    examples: list[CaptionExample] = []
    skipped = 0
    for m in manifests:
        ex, sk = caption_examples(read_manifest(m), split)
        examples += ex
        skipped += sk
    if limit and len(examples) > limit:
        order = np.random.default_rng(seed).permutation(len(examples))[:limit]
        examples = [examples[i] for i in sorted(order)]
    return examples, skipped


def example_rows(manifests: list[str], examples: list[CaptionExample]) -> list[dict]:
    """The manifest row of each example (matched on the resolved image path; ``{}`` when absent)."""
    lookup: dict[str, dict] = {}
    for m in manifests:
        df = read_manifest(m)
        for row in df.to_dict("records"):
            lookup[os.path.normpath(str(resolve(df, row["image"])))] = row
    return [lookup.get(os.path.normpath(str(e.image)), {}) for e in examples]
