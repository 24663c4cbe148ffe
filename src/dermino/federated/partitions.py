"""Client data: the rows of a manifest whose ``column`` has one value, split train/val/test.

A "site" in a federation is any value of any manifest column the user names: the dataset
(``source``: HAM10000, PH2, ISIC 2017, the paper's three sites), HAM10000's ``dx_type`` or
body ``site``. Each client keeps its own splits; a client without test rows evaluates on its
val rows and carves a new validation set from train (whole lesions), so no site is dropped
because its publisher split it differently.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dermino.data.manifest import read_manifest, resolve, split_labels
from dermino.evaluate.splits import carve_validation
from dermino.federated.config import DataSection

#: the three partitions whose comparison the benchmark and the docs report
DEFAULT_PARTITIONS: dict[str, dict[str, object]] = {
    "sites": {"column": "source", "sources": []},  # HAM10000 / PH2 / ISIC 2017
    "ham10000-dx_type": {"column": "dx_type", "sources": ["ham10000"]},
    "ham10000-site": {"column": "site", "sources": ["ham10000"]},
}


@dataclass
class ClientData:
    """One client's labelled rows with the split each row plays in training and evaluation."""

    name: str
    frame: pd.DataFrame  # rows of the manifest (absolute image paths)
    y: np.ndarray  # class index of each row
    split: np.ndarray  # "train" / "val" / "test"

    def rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(self.split == split)

    def counts(self) -> dict[str, int]:
        return {s: int((self.split == s).sum()) for s in ("train", "val", "test")}


def load_manifests(data: DataSection, work_dir: str | Path) -> pd.DataFrame:
    """All manifests of ``data`` as one table with absolute image paths.

    ``sample`` stands for the bundled sample (HAM10000, PH2, ISIC 2017), written under
    ``work_dir/manifests`` so the run is self-contained.
    """
    frames = []
    for item in data.manifests:
        if item == "sample":
            from dermino.data.sample import sample_manifests

            paths = list(sample_manifests(Path(work_dir) / "manifests", seed=data.seed).values())
        else:
            paths = [Path(item)]
        for path in paths:
            df = read_manifest(path)
            df["image"] = [str(resolve(df, v) or "") for v in df["image"]]
            frames.append(df)
    df = pd.concat(frames, ignore_index=True).fillna("")
    df.attrs["root"] = "/"
    if data.sources:
        unknown = sorted(set(data.sources) - set(df["source"]))
        if unknown:
            raise ValueError(f"data.sources: {unknown} not in the manifests (have {sorted(set(df['source']))})")
        df = df[df["source"].isin(data.sources)].reset_index(drop=True)
        df.attrs["root"] = "/"
    return df


def primary_label(value: object) -> str:
    labels = split_labels(value)
    return labels[0] if labels else ""


def client_names(df: pd.DataFrame, data: DataSection) -> list[str]:
    """Values of ``data.column`` with at least ``data.min_rows`` labelled train rows (or those asked for)."""
    if data.column not in df.columns:
        raise KeyError(f"data.column {data.column!r} is not a manifest column; have {sorted(df.columns)}")
    labelled = df[df["labels"].map(primary_label) != ""]
    counts = labelled[labelled["split"] == "train"].groupby(labelled[data.column].astype(str)).size()
    if data.clients:
        missing = [c for c in data.clients if c not in counts.index]
        if missing:
            raise ValueError(f"data.clients: no labelled train rows with {data.column} in {missing}; "
                             f"values present: {sorted(counts.index)}")
        return list(data.clients)
    names = sorted(str(v) for v, n in counts.items() if v != "" and n >= data.min_rows)
    if not names:
        raise ValueError(f"no value of {data.column!r} has >= {data.min_rows} labelled train rows")
    return names


def class_names(df: pd.DataFrame, data: DataSection, clients: list[str]) -> list[str]:
    """The shared label space: ``data.classes`` or the sorted union of the clients' labels."""
    if data.classes:
        return list(data.classes)
    rows = df[df[data.column].astype(str).isin(clients)]
    return sorted({primary_label(v) for v in rows["labels"]} - {""})


def client_data(df: pd.DataFrame, data: DataSection, name: str, classes: list[str]) -> ClientData:
    """Labelled rows of client ``name`` with their train/val/test roles (see module doc)."""
    if data.column not in df.columns:
        raise KeyError(f"data.column {data.column!r} is not a manifest column; have {sorted(df.columns)}")
    rows = df[df[data.column].astype(str) == name].copy()
    rows["_label"] = rows["labels"].map(primary_label)
    rows = rows[(rows["_label"] != "") & rows["split"].isin(["train", "val", "test"])]
    unknown = sorted(set(rows["_label"]) - set(classes))
    if unknown:
        raise ValueError(f"client {name!r}: labels {unknown} are not in the class list {classes}")
    rows = rows.reset_index(drop=True)
    rows.attrs["root"] = "/"
    split = rows["split"].to_numpy().astype(object)
    if not (split == "train").any():
        raise ValueError(f"client {name!r} has no labelled train rows")
    if not (split == "test").any():  # evaluate on val, carve a new val from train
        split[split == "val"] = "test"
    if not (split == "val").any():
        tr = np.flatnonzero(split == "train")
        groups = rows["lesion_id"].astype(str).to_numpy()[tr]
        groups = np.where(groups == "", rows["image"].to_numpy()[tr], groups)
        moved = carve_validation(groups, rows["_label"].to_numpy()[tr], data.val_fraction, seed=data.seed)
        split[tr[moved]] = "val"
    index = {c: i for i, c in enumerate(classes)}
    y = rows["_label"].map(index).to_numpy().astype(int)
    return ClientData(name=name, frame=rows.drop(columns="_label"), y=y, split=split.astype(str))
