"""Fitzpatrick17k (Groh et al., CVPR-W 2021): 16,577 clinical images, Fitzpatrick skin type 1-6.

Official source: https://github.com/mattgroh/fitzpatrick17k (labels CSV; CC BY-NC-SA 3.0).
The images are not redistributed: each row has the URL of a public atlas image, which the
user downloads into a folder as ``<md5hash>.jpg`` (or .png). ``dermino data download
fitzpatrick17k --out DIR`` fetches the CSV and tries every URL.

Rows whose image is absent are left out of the table but counted (log line) and listed in
``df.attrs['missing_images']``: many source URLs have died since 2021. ``fitzpatrick`` comes
from ``fitzpatrick_scale`` (-1 = unknown -> empty); the 114 labels pass through disease-name
normalisation; the 3- and 9-way partitions, the QC note and the URL are kept as columns.
"""

from __future__ import annotations

import logging
import urllib.request
from pathlib import Path

import pandas as pd

from dermino.progress import tqdm

from ..disease_names import normalise_disease_name
from ._common import clean, download_files, finish, first_existing, index_files, rel

NAME = "fitzpatrick17k"
CSV_URL = "https://raw.githubusercontent.com/mattgroh/fitzpatrick17k/main/fitzpatrick17k.csv"
log = logging.getLogger(__name__)


def build_manifest(root: Path, images: str = "images", csv: str | None = None) -> pd.DataFrame:
    """Manifest of a Fitzpatrick17k folder: the CSV at ``root`` and images in ``root/images``."""
    root = Path(root)
    csv_path = first_existing([root / csv] if csv else [root / "fitzpatrick17k.csv"], "Fitzpatrick17k CSV")
    table = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    need = {"md5hash", "fitzpatrick_scale", "label"}
    if not need <= set(table.columns):
        raise ValueError(f"{csv_path}: expected columns {sorted(need)}, found {list(table.columns)}")
    files = index_files([root / images, root], (".jpg", ".jpeg", ".png"))
    rows, missing = [], []
    for i, r in enumerate(table.to_dict("records")):
        fitz = clean(r["fitzpatrick_scale"])
        try:
            fitz_val = int(float(fitz)) if fitz else -1
        except ValueError as exc:
            raise ValueError(f"{csv_path}: row {i}: fitzpatrick_scale '{fitz}' is not a number") from exc
        if fitz_val not in (-1, 1, 2, 3, 4, 5, 6):
            raise ValueError(f"{csv_path}: row {i}: fitzpatrick_scale {fitz_val} outside 1-6 / -1")
        img = files.get(r["md5hash"])
        if img is None:
            missing.append(r["md5hash"])
            continue
        rows.append({
            "image": rel(img, root),
            "split": "",
            "labels": normalise_disease_name(r["label"]),
            "fitzpatrick": str(fitz_val) if fitz_val > 0 else "",
            "modality": "clinical",
            "image_id": r["md5hash"],
            "label_raw": r["label"],
            "nine_partition_label": clean(r.get("nine_partition_label", "")),
            "three_partition_label": clean(r.get("three_partition_label", "")),
            "qc": clean(r.get("qc", "")),
            "url": clean(r.get("url", "")),
        })
    return finish(rows, root, NAME, table["label"].tolist(), missing)


def download(out: Path, images: bool = True) -> None:
    """Fetch the CSV, then each image URL to ``out/images/<md5hash>.<ext>`` (dead links logged)."""
    download_files([CSV_URL], out)
    if not images:
        return
    table = pd.read_csv(out / "fitzpatrick17k.csv", dtype=str, keep_default_na=False)
    dest = out / "images"
    dest.mkdir(parents=True, exist_ok=True)
    failed = 0
    for r in tqdm(table.to_dict("records"), desc="fitzpatrick17k images", unit="img"):
        url = r.get("url", "")
        ext = ".png" if url.lower().endswith(".png") else ".jpg"
        target = dest / f"{r['md5hash']}{ext}"
        if target.exists() or not url:
            continue
        try:
            req = urllib.request.Request(url, headers={"User-Agent": "dermino"})
            with urllib.request.urlopen(req, timeout=30) as resp:
                target.write_bytes(resp.read())
        except OSError as exc:
            failed += 1
            log.warning("fitzpatrick17k: %s: %s", url, exc)
    log.info("fitzpatrick17k: %d of %d images could not be fetched", failed, len(table))
