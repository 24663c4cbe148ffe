"""Grouped, stratified, seeded splits: invariants on the real HAM10000 table."""

from __future__ import annotations

import pandas as pd
import pytest

from dermino.data.splits import assign_splits, carve_validation, paper_split, split_groups


@pytest.fixture(scope="module")
def ham(shared_data) -> pd.DataFrame:
    meta = pd.read_csv(shared_data / "ham10000" / "HAM10000_metadata.csv", dtype=str)
    return pd.DataFrame({"image": meta.image_id, "source": "ham10000", "split": "",
                         "labels": meta.dx, "lesion_id": meta.lesion_id})


def _no_group_crosses(df, col="lesion_id"):
    per = df[df.split.isin(["train", "val", "test"])].groupby(col)["split"].nunique()
    return (per == 1).all()


def test_no_lesion_crosses_splits(ham):
    out = assign_splits(ham, test_fraction=0.5, val_fraction=0.1, seed=0)
    assert set(out.split) == {"train", "val", "test"}
    assert _no_group_crosses(out)
    n = len(out)
    assert abs((out.split == "test").sum() / n - 0.5) < 0.01
    assert abs((out.split == "val").sum() / n - 0.05) < 0.01


def test_stratified_per_label(ham):
    out = paper_split(ham, seed=3)
    share = out.groupby("labels")["split"].apply(lambda s: (s == "test").mean())
    assert set(out.split) == {"train", "test"}
    assert ((share - 0.5).abs() < 0.05).all(), share


def test_reproducible_and_seed_dependent(ham):
    a = assign_splits(ham, seed=0)
    b = assign_splits(ham, seed=0)
    c = assign_splits(ham, seed=1)
    assert a.split.tolist() == b.split.tolist()
    assert (a.split != c.split).mean() > 0.2


def test_val_fraction_does_not_move_test_rows(ham):
    a = assign_splits(ham, val_fraction=0.0, seed=5)
    b = assign_splits(ham, val_fraction=0.2, seed=5)
    assert ((a.split == "test") == (b.split == "test")).all()
    assert _no_group_crosses(b)


def test_empty_group_ids_are_own_groups():
    df = pd.DataFrame({"image": [f"{i}.jpg" for i in range(40)], "labels": ["a", "b"] * 20,
                       "lesion_id": [""] * 40, "split": ""})
    out = assign_splits(df, test_fraction=0.5, val_fraction=0.0, seed=0)
    assert (out.split == "test").sum() == 20
    assert out.groupby("labels")["split"].apply(lambda s: (s == "test").sum()).tolist() == [10, 10]


def test_official_splits_kept_unless_told(ham):
    df = ham.copy()
    lesions = df.lesion_id.unique()
    official_test = df.lesion_id.isin(lesions[:100])  # whole lesions, as official splits are
    unlabelled = df.lesion_id.isin(lesions[100:200])
    df.loc[official_test, "split"] = "test"
    df.loc[unlabelled, "split"] = "none"
    out = assign_splits(df, seed=0)
    assert (out.split[official_test] == "test").all() and (out.split[unlabelled] == "none").all()
    assert set(out.split[~official_test & ~unlabelled]) == {"train", "val", "test"}
    assert _no_group_crosses(out)
    again = assign_splits(df, seed=0, only_unassigned=False)
    assert "none" not in set(again.split)


def test_partly_assigned_lesion_refused():
    df = pd.DataFrame({"image": ["a", "b", "c"], "labels": "x", "lesion_id": ["L1", "L1", "L2"],
                       "split": ["train", "", ""]})
    with pytest.raises(ValueError, match="L1"):
        assign_splits(df)


def test_carve_validation_is_grouped(ham):
    base = paper_split(ham, seed=0)
    out = carve_validation(base, 0.1, seed=0)
    assert ((base.split == "test") == (out.split == "test")).all()
    assert 0.04 < (out.split == "val").mean() < 0.06
    assert _no_group_crosses(out)


def test_split_groups_fraction_bounds():
    df = pd.DataFrame({"labels": ["a"] * 10, "lesion_id": [""] * 10})
    assert split_groups(df, 0.0).sum() == 0 and split_groups(df, 1.0).sum() == 10
    with pytest.raises(ValueError):
        split_groups(df, 1.5)
