"""PH2 (Mendonca et al., EMBC 2013): 200 dermoscopic images, Hospital Pedro Hispano, Portugal.

Official source: https://www.fc.up.pt/addi/ph2%20database.html (free for research after a
request form; cite Mendonca et al. 2013).

Layout read: ``PH2_dataset.xlsx`` (preferred) or ``PH2_dataset.txt`` beside (or inside a
``PH2Dataset/`` folder under) the root, images in ``images/IMDxxx.jpg`` or the official
``PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.bmp``, masks in
``masks/IMDxxx_lesion.png`` or ``PH2 Dataset images/IMDxxx/IMDxxx_lesion/IMDxxx_lesion.bmp``.

The xlsx is parsed, not assumed: the legend block above the table (criterion -> code ->
meaning) goes to ``df.attrs['legend']``, the header row is found by its "Image Name" cell,
and the clinical diagnosis is whichever of the Common Nevus / Atypical Nevus / Melanoma
columns holds an "X". Every dermoscopic criterion (codes as published: asymmetry 0/1/2,
AT/T, A/P …) and each colour (True/False) becomes a column.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..disease_names import normalise_disease_name
from ._common import clean, finish, index_files, log, rel

NAME = "ph2"
DIAGNOSES = ("common nevus", "atypical nevus", "melanoma")
INSTRUCTIONS = """PH2 is free for research but distributed on request:
  1. fill in the form at https://www.fc.up.pt/addi/ph2%20database.html and download PH2Dataset.rar
  2. extract it (it holds PH2_dataset.xlsx, PH2_dataset.txt and 'PH2 Dataset images/')
  3. dermino data prepare ph2 --root PH2Dataset --out ph2.csv"""

_NAME_RE = re.compile(r"^IMD\d+$")


def _snake(text: str) -> str:
    text = re.sub(r"\(.*?\)", " ", str(text))  # drop "(0/1/2)" / "(AT/T)" hints
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def parse_xlsx(path: Path) -> tuple[pd.DataFrame, dict[str, dict[str, str]]]:
    """The PH2 sheet as a table (one row per image) plus its legend block."""
    import openpyxl

    wb = openpyxl.load_workbook(path, data_only=True)  # not read-only: we need merged cells
    ws = wb.worksheets[0]
    grid = [list(r) for r in ws.iter_rows(values_only=True)]
    merged = [(m.min_row - 1, m.min_col - 1, m.max_col - 1) for m in ws.merged_cells.ranges]
    wb.close()
    header_at = next(
        (i for i, r in enumerate(grid) if r and str(r[0] or "").strip().lower() == "image name"), None
    )
    if header_at is None:
        raise ValueError(f"{path}: no header row starting with 'Image Name' found")
    header = grid[header_at]
    # the row above the header names column groups ("Clinical Diagnosis", "Colors"), each
    # written once in a merged cell spanning its columns
    groups = [""] * len(header)
    if header_at > 0:
        above = header_at - 1
        for j, g in enumerate(grid[above]):
            if g not in (None, ""):
                span = next((c1 for r0, c0, c1 in merged if r0 == above and c0 == j), j)
                for k in range(j, min(span, len(header) - 1) + 1):
                    groups[k] = _snake(g)
    legend = _parse_legend(grid[: header_at - 1] if any(groups) else grid[:header_at])
    names = []
    for j, h in enumerate(header):
        base = _snake(h) if h not in (None, "") else f"col{j}"
        names.append(f"color_{base}" if groups[j] in ("colors", "colours") else base)
    rows = []
    for r in grid[header_at + 1 :]:
        if not r or not _NAME_RE.match(str(r[0] or "").strip()):
            continue  # blank lines / notes after the table
        rows.append({names[j]: r[j] if j < len(r) else None for j in range(len(names))})
    table = pd.DataFrame(rows)
    diag_cols = {normalise_disease_name(h): names[j] for j, h in enumerate(header)
                 if groups[j] == "clinical_diagnosis" and h}
    missing = [d for d in DIAGNOSES if d not in diag_cols]
    if missing:
        raise ValueError(f"{path}: clinical diagnosis column(s) {missing} not found in header {header}")
    out = pd.DataFrame({"name": table[names[0]].astype(str).str.strip()})
    diag = []
    for i, r in table.iterrows():
        hits = [d for d in DIAGNOSES if str(r[diag_cols[d]] or "").strip().upper() == "X"]
        if len(hits) != 1:
            raise ValueError(f"{path}: image {out.name[i]}: expected one 'X' among {DIAGNOSES}, got {hits}")
        diag.append(hits[0])
    out["diagnosis"] = diag
    for j, col in enumerate(names[1:], start=1):
        if groups[j] == "clinical_diagnosis":
            continue
        if col.startswith("color_"):
            out[col] = [str(v or "").strip().upper() == "X" for v in table[col]]
        else:
            out[col] = [clean(v) for v in table[col]]
    return out, legend


def _parse_legend(grid: list[list]) -> dict[str, dict[str, str]]:
    """Legend rows: a criterion cell (maybe several names, one per line), then code, meaning."""
    legend: dict[str, dict[str, str]] = {}
    current: list[str] = []
    for r in grid:
        filled = [c for c in r if c not in (None, "")]
        if any(isinstance(c, str) and c.strip().lower() == "legends" for c in filled):
            continue
        if len(filled) == 3:  # criterion (one or more names, one per line), code, meaning
            current = [_snake(x) for x in str(filled[0]).splitlines() if x.strip()]
            code, meaning = filled[1], filled[2]
        elif len(filled) == 2 and current:  # another code of the same criterion
            code, meaning = filled
        else:
            continue
        for crit in current:
            legend.setdefault(crit, {})[str(code).strip()] = str(meaning).strip()
    return legend


def parse_txt(path: Path) -> pd.DataFrame:
    """Fallback: the tab- or '||'-separated text version (diagnosis coded 0/1/2)."""
    lines = path.read_text(encoding="latin-1").splitlines()
    split = (lambda s: [c.strip() for c in s.strip().strip("|").split("||")]) if "||" in "".join(lines[:5]) else (
        lambda s: [c.strip() for c in s.split("\t")]
    )
    header_at = next((i for i, ln in enumerate(lines) if split(ln) and split(ln)[0].lower() == "name"), None)
    if header_at is None:
        raise ValueError(f"{path}: no header line starting with 'Name'")
    names = [_snake(h) for h in split(lines[header_at])]
    if "clinical_diagnosis" not in names:
        raise ValueError(f"{path}: no 'Clinical Diagnosis' column in {names}")
    rows = []
    for ln in lines[header_at + 1 :]:
        cells = split(ln)
        if cells and _NAME_RE.match(cells[0]):
            rows.append(dict(zip(names, cells, strict=False)))
    table = pd.DataFrame(rows)
    codes = {"0": "common nevus", "1": "atypical nevus", "2": "melanoma"}
    bad = table[~table["clinical_diagnosis"].isin(list(codes))]
    if len(bad):
        raise ValueError(f"{path}: unknown clinical diagnosis codes {bad['clinical_diagnosis'].unique().tolist()}")
    out = pd.DataFrame({"name": table["name"], "diagnosis": table["clinical_diagnosis"].map(codes)})
    for col in names[1:]:
        if col != "clinical_diagnosis":
            out[col] = table[col].fillna("")
    return out


def build_manifest(root: Path, table: str | None = None) -> pd.DataFrame:
    """Manifest of a PH2 folder; ``table`` forces a specific xlsx/txt file name."""
    root = Path(root)
    bases = [root, root / "PH2Dataset"]
    if table:
        cands = [root / table]
    else:
        cands = [b / n for b in bases for n in ("PH2_dataset.xlsx", "PH2_dataset.txt")]
    found = next((p for p in cands if p.is_file()), None)
    if found is None:
        raise FileNotFoundError("PH2 table not found; looked for: " + ", ".join(map(str, cands)))
    legend: dict = {}
    if found.suffix.lower() == ".xlsx":
        info, legend = parse_xlsx(found)
    else:
        log.info("ph2: using the text table %s (the xlsx has more columns)", found)
        info = parse_txt(found)
    official = next((b / "PH2 Dataset images" for b in bases if (b / "PH2 Dataset images").is_dir()), None)
    images = index_files([root / "images"])
    masks = index_files([root / "masks"])
    if official is not None:
        images.update({k: v for k, v in index_files([official], recursive=True).items()
                       if _NAME_RE.match(k) and k not in images})
        for k, v in index_files([official], recursive=True).items():
            if k.endswith("_lesion"):
                masks.setdefault(k, v)
    rows, missing = [], []
    extra_cols = [c for c in info.columns if c not in ("name", "diagnosis")]
    for r in info.to_dict("records"):
        img = images.get(r["name"])
        if img is None:
            missing.append(r["name"])
            continue
        mask = masks.get(f"{r['name']}_lesion")
        row = {
            "image": rel(img, root),
            "split": "",
            "labels": r["diagnosis"],
            "mask": rel(mask, root) if mask else "",
            "modality": "dermoscopic",
            "lesion_id": r["name"],
            "image_id": r["name"],
        }
        row.update({c: r[c] for c in extra_cols})
        rows.append(row)
    df = finish(rows, root, NAME, DIAGNOSES, missing)
    df.attrs["legend"] = legend
    return df


def download(out: Path) -> None:
    """PH2 is distributed on request: print how to get it."""
    print(INSTRUCTIONS)
