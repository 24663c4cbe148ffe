"""Grouped, stratified, seeded train/val/test splits.

Images of one lesion (HAM10000 has up to 6 per lesion) or one patient are near-duplicates:
if they straddle train and test, kNN "finds" the answer in the training set and every
metric is inflated. So whole groups are assigned, never single images. Within that
constraint each label keeps (close to) its share in every split, and the result is a pure
function of the seed. Official splits (e.g. ISIC 2017 train/val/test) are kept as they are
unless ``only_unassigned=False``.

The greedy is our own: per stratum, shuffle the groups with the seed, then add groups to
the held-out part while that brings its size closer to the target. It is exact enough for
5-10 % tolerance on small classes and, unlike fold-based splitters, allows any fraction.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from .manifest import split_labels

ASSIGNED = ("train", "val", "test", "none")


def group_keys(df: pd.DataFrame, group_col: str | None) -> pd.Series:
    """Group id per row; rows with an empty id (or no such column) are their own group."""
    if group_col is None or group_col not in df.columns:
        return pd.Series([f"\x00row{i}" for i in range(len(df))], index=df.index)
    vals = df[group_col].map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    src = df["source"].astype(str) if "source" in df.columns else pd.Series([""] * len(df), index=df.index)
    # a lesion id is only unique inside its source dataset
    keys = [f"{s}\x00{v}" if v else f"\x00row{i}" for i, (s, v) in enumerate(zip(src, vals, strict=True))]
    return pd.Series(keys, index=df.index)


def _group_strata(df: pd.DataFrame, keys: pd.Series, stratify_col: str | None) -> dict[str, str]:
    """Stratum of each group: its most common label string (ties broken alphabetically)."""
    if stratify_col is None or stratify_col not in df.columns:
        return dict.fromkeys(keys.unique(), "")
    labels = df[stratify_col].map(lambda v: ";".join(sorted(split_labels(v))))
    per_group: dict[str, Counter] = {}
    for k, lab in zip(keys, labels, strict=True):
        per_group.setdefault(k, Counter())[lab] += 1
    return {k: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for k, c in per_group.items()}


def split_groups(
    df: pd.DataFrame,
    fraction: float,
    group_col: str | None = "lesion_id",
    stratify_col: str | None = "labels",
    seed: int = 0,
) -> pd.Series:
    """Boolean mask selecting about ``fraction`` of the rows, by whole groups, per stratum."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], got {fraction}")
    selected = pd.Series(False, index=df.index)
    if len(df) == 0 or fraction == 0.0:
        return selected
    keys = group_keys(df, group_col)
    sizes = keys.value_counts()
    strata = _group_strata(df, keys, stratify_col)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    for stratum in sorted(set(strata.values())):
        groups = sorted(k for k, s in strata.items() if s == stratum)
        groups = [groups[i] for i in rng.permutation(len(groups))]
        target = fraction * sum(int(sizes[g]) for g in groups)
        taken = 0
        for g in groups:
            n = int(sizes[g])
            if abs(taken + n - target) < abs(taken - target):
                chosen.add(g)
                taken += n
    return keys.isin(chosen)


def assign_splits(
    df: pd.DataFrame,
    test_fraction: float = 0.5,
    val_fraction: float = 0.1,
    group_col: str | None = "lesion_id",
    seed: int = 0,
    only_unassigned: bool = True,
    stratify_col: str | None = "labels",
) -> pd.DataFrame:
    """Fill the ``split`` column: test, then a validation carve-out from the new train part.

    ``test_fraction`` is a share of the rows being assigned; ``val_fraction`` a share of
    their train part (validation for model selection, never test). With
    ``only_unassigned`` (default) rows that already carry train/val/test/none keep it, so
    official splits survive; otherwise every row is re-assigned. The paper's protocol is
    ``test_fraction=0.5, val_fraction=0`` (see :func:`paper_split`).
    """
    if test_fraction + val_fraction * (1 - test_fraction) > 1.0 + 1e-9:
        raise ValueError("test_fraction and val_fraction leave no training data")
    out = df.copy()
    if "split" not in out.columns:
        out["split"] = ""
    current = out["split"].map(lambda v: "" if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    todo = ~current.isin(ASSIGNED) if only_unassigned else pd.Series(True, index=out.index)
    if only_unassigned and todo.any():
        _check_groups_free(out, current, todo, group_col)
    sub = out[todo]
    is_test = split_groups(sub, test_fraction, group_col, stratify_col, seed)
    train = sub[~is_test]
    # a different stream for the carve-out, so changing val_fraction never moves test rows
    is_val = split_groups(train, val_fraction, group_col, stratify_col, seed + 1_000_003)
    new = pd.Series("train", index=sub.index)
    new[is_test[is_test].index] = "test"
    new[is_val[is_val].index] = "val"
    current[todo] = new
    out["split"] = current
    out.attrs = dict(df.attrs)
    return out


def _check_groups_free(df: pd.DataFrame, current: pd.Series, todo: pd.Series, group_col: str | None) -> None:
    """Unassigned rows whose group already has an official split would leak: refuse."""
    if group_col is None or group_col not in df.columns:
        return
    keys = group_keys(df, group_col)
    fixed = set(keys[~todo & current.isin(("train", "val", "test"))])
    clash = sorted(set(keys[todo]) & fixed - {k for k in fixed if k.startswith("\x00row")})
    if clash:
        shown = ", ".join(c.split("\x00")[-1] for c in clash[:5])
        raise ValueError(
            f"{len(clash)} {group_col} group(s) are partly assigned already (e.g. {shown}); "
            "re-run with only_unassigned=False to split them as a whole"
        )


def paper_split(df: pd.DataFrame, group_col: str | None = "lesion_id", seed: int = 0) -> pd.DataFrame:
    """DermINO's protocol: a stratified 50/50 train/test split (grouped), no validation."""
    return assign_splits(df, test_fraction=0.5, val_fraction=0.0, group_col=group_col, seed=seed)


def carve_validation(
    df: pd.DataFrame, val_fraction: float = 0.1, group_col: str | None = "lesion_id", seed: int = 0
) -> pd.DataFrame:
    """Move a grouped, stratified ``val_fraction`` of the train rows to ``val``."""
    out = df.copy()
    train = out[out["split"] == "train"]
    is_val = split_groups(train, val_fraction, group_col, "labels", seed + 1_000_003)
    out.loc[is_val[is_val].index, "split"] = "val"
    out.attrs = dict(df.attrs)
    return out
