"""The bundled sample: a few hundred real images, in each dataset's published layout.

Tests, the demo and new users need real dermoscopy without a download. The sample keeps
each dataset's own layout, so the same adapters read it as read the full data (nothing
sample-specific downstream). ``build_sample`` is the script that made the bundle from
the full copies (``python -m dermino.data.sample SHARED_DATA OUT``); it is seeded, so the
bundle can be rebuilt identically.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from .adapters import ham10000, isic2017, ph2
from .manifest import write_manifest
from .splits import assign_splits

SAMPLE_DATASETS = ("ham10000", "ph2", "isic2017")
#: HAM10000 images per diagnosis in the sample (whole lesions, so counts are approximate)
HAM_QUOTA = {"nv": 90, "mel": 50, "bkl": 50, "bcc": 35, "akiec": 30, "vasc": 25, "df": 20}
PH2_QUOTA = {"common nevus": 24, "atypical nevus": 24, "melanoma": 12}
#: ISIC 2017 images per (part, melanoma?): train and val with both classes, unlabelled test
ISIC_QUOTA = {("Training", 1): 40, ("Training", 0): 80, ("Validation", 1): 10, ("Validation", 0): 20}
ISIC_TEST = 50


def sample_root() -> Path:
    """Folder of the bundled sample (``<root>/ham10000``, ``/ph2``, ``/isic2017``)."""
    return Path(__file__).resolve().parents[1] / "sample_data"


def sample_manifests(
    out_dir: str | Path, seed: int = 0, test_fraction: float = 0.5, val_fraction: float = 0.1
) -> dict[str, Path]:
    """Write ``ham10000.csv``, ``ph2.csv``, ``isic2017.csv`` for the sample, splits assigned.

    HAM10000 is split by lesion; PH2 has one image per lesion; ISIC 2017 keeps its official
    train/val and its unlabelled test images (split ``none``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, build in (("ham10000", ham10000.build_manifest), ("ph2", ph2.build_manifest),
                        ("isic2017", isic2017.build_manifest)):
        df = build(sample_root() / name)
        df = assign_splits(df, test_fraction=test_fraction, val_fraction=val_fraction,
                           group_col="lesion_id", seed=seed)
        written[name] = write_manifest(df, out_dir / f"{name}.csv")
    return written


# ------------------------------------------------------------------ building the bundle


def build_sample(data_root: str | Path, out: str | Path | None = None, seed: int = 0) -> Path:
    """Copy a stratified, seeded subset of ``data_root`` (ham10000/, ph2/, isic2017/) into ``out``
    (default: the package)."""
    data_root, out = Path(data_root), Path(out) if out is not None else sample_root()
    rng = np.random.default_rng(seed)
    for name in SAMPLE_DATASETS:  # start clean so a rebuild never keeps stale files
        if (out / name).exists():
            shutil.rmtree(out / name)
    _ham(data_root / "ham10000", out / "ham10000", rng)
    _ph2(data_root / "ph2", out / "ph2", rng)
    _isic(data_root / "isic2017", out / "isic2017", rng)
    return out


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)


def _ham(src: Path, dst: Path, rng: np.random.Generator) -> None:
    meta = pd.read_csv(src / "HAM10000_metadata.csv", dtype=str, keep_default_na=False)
    keep: set[str] = set()
    for dx, quota in HAM_QUOTA.items():
        lesions = sorted(meta.loc[meta.dx == dx, "lesion_id"].unique())
        sizes = meta[meta.dx == dx].groupby("lesion_id").size()
        taken = 0
        for i in rng.permutation(len(lesions)):
            if taken >= quota:
                break
            keep.add(lesions[i])
            taken += int(sizes[lesions[i]])  # whole lesions: all its images come along
    sub = meta[meta.lesion_id.isin(keep)]
    dst.mkdir(parents=True, exist_ok=True)
    sub.to_csv(dst / "HAM10000_metadata.csv", index=False)
    for iid in sub.image_id:
        _copy(src / "images" / f"{iid}.jpg", dst / "images" / f"{iid}.jpg")
        mask = src / "masks_200x150" / f"{iid}_segmentation.png"
        if mask.is_file():
            _copy(mask, dst / "masks_200x150" / mask.name)


def _ph2(src: Path, dst: Path, rng: np.random.Generator) -> None:
    import openpyxl

    info, _ = ph2.parse_xlsx(src / "PH2_dataset.xlsx")
    chosen: set[str] = set()
    for diag, quota in PH2_QUOTA.items():
        names = sorted(info.loc[info.diagnosis == diag, "name"])
        chosen.update(names[i] for i in rng.permutation(len(names))[:quota])
    dst.mkdir(parents=True, exist_ok=True)
    # the xlsx reduced to the chosen rows; legend and header rows (above the table) stay
    wb = openpyxl.load_workbook(src / "PH2_dataset.xlsx")
    ws = wb.worksheets[0]
    for row in range(ws.max_row, 0, -1):
        name = str(ws.cell(row=row, column=1).value or "").strip()
        if name.startswith("IMD") and name not in chosen:
            ws.delete_rows(row)
    wb.save(dst / "PH2_dataset.xlsx")
    # the text version, same reduction (legend lines after the table kept as they are)
    lines = (src / "PH2_dataset.txt").read_bytes().split(b"\n")
    kept = [ln for ln in lines if not ln.startswith(b"IMD") or ln.split(b"\t")[0].decode() in chosen]
    (dst / "PH2_dataset.txt").write_bytes(b"\n".join(kept))
    for name in sorted(chosen):
        _copy(src / "images" / f"{name}.jpg", dst / "images" / f"{name}.jpg")
        _copy(src / "masks" / f"{name}_lesion.png", dst / "masks" / f"{name}_lesion.png")


def _isic(src: Path, dst: Path, rng: np.random.Generator) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for part in ("Training", "Validation"):
        classes = pd.read_csv(src / f"ISIC-2017_{part}_Classes.csv", dtype=str, keep_default_na=False)
        mel = classes.melanoma.astype(float) >= 0.5
        ids: list[str] = []
        for flag in (1, 0):
            pool = sorted(classes.loc[mel == bool(flag), "image_id"])
            ids += [pool[i] for i in rng.permutation(len(pool))[: ISIC_QUOTA[(part, flag)]]]
        classes[classes.image_id.isin(ids)].to_csv(dst / f"ISIC-2017_{part}_Classes.csv", index=False)
        meta = pd.read_csv(src / f"ISIC-2017_{part}_Data_metadata.csv", dtype=str, keep_default_na=False)
        meta[meta.image_id.isin(ids)].to_csv(dst / f"ISIC-2017_{part}_Data_metadata.csv", index=False)
        for iid in ids:
            name = f"ISIC-2017_{part}_Data/{iid}.jpg"
            _copy(src / name, dst / name)
    pool = sorted(p.name for p in (src / "ISIC-2017_Test_v2_Data").glob("*.jpg"))
    for i in sorted(rng.permutation(len(pool))[:ISIC_TEST]):
        _copy(src / "ISIC-2017_Test_v2_Data" / pool[i], dst / "ISIC-2017_Test_v2_Data" / pool[i])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the bundled sample from the full data copies.")
    parser.add_argument("data_root", type=Path, help="folder holding ham10000/, ph2/, isic2017/")
    parser.add_argument("out", type=Path, nargs="?", default=None, help="default: the package's sample_data")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(build_sample(args.data_root, args.out, seed=args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
