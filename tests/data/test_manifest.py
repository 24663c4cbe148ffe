"""Manifest IO and validation: every problem reported at once, with rows and paths."""

from __future__ import annotations

import pandas as pd
import pytest

from dermino.data.manifest import (
    COLUMNS,
    ManifestError,
    conform,
    read_manifest,
    require_valid,
    validate_manifest,
    write_manifest,
)


def _make(tmp_path, n=4):
    for i in range(n):
        (tmp_path / f"img{i}.jpg").write_bytes(b"x")
    df = conform(pd.DataFrame({
        "image": [f"img{i}.jpg" for i in range(n)],
        "source": "toy",
        "split": ["train", "test", "val", "train"][:n],
        "labels": ["melanoma", "melanocytic nevus", "melanoma", "melanocytic nevus"][:n],
        "label_space": "melanocytic nevus;melanoma",
        "lesion_id": [f"L{i}" for i in range(n)],
    }))
    df.attrs["root"] = str(tmp_path)
    return df


def test_valid_manifest_has_no_problems(tmp_path):
    df = _make(tmp_path)
    assert validate_manifest(df) == []
    assert require_valid(df) is df


def test_every_problem_reported_with_rows(tmp_path):
    df = _make(tmp_path, 4)
    df.loc[0, "split"] = "training"            # unknown split
    df.loc[1, "labels"] = "melanoma;psoriasis"  # label outside label_space
    df.loc[2, "image"] = "missing.jpg"          # file absent
    df.loc[3, "image"] = "img1.jpg"             # duplicate of row 1
    df.loc[3, "sex"] = "M"
    df.loc[3, "fitzpatrick"] = "7"
    df.loc[0, "age"] = "old"
    problems = validate_manifest(df)
    found = {(p.row, p.column) for p in problems}
    assert {(0, "split"), (1, "labels"), (2, "image"), (3, "image"), (3, "sex"), (3, "fitzpatrick"), (0, "age")} <= found
    missing = next(p for p in problems if p.row == 2)
    assert missing.path.endswith("missing.jpg") and "not found" in missing.message
    dup = next(p for p in problems if p.row == 3 and p.column == "image")
    assert "duplicate" in dup.message and "row 1" in dup.message
    assert "psoriasis" in next(p for p in problems if p.row == 1).message
    with pytest.raises(ManifestError) as info:
        require_valid(df)
    assert len(info.value.problems) == len(problems)
    text = str(info.value)
    assert "row 0" in text and "row 2" in text and "missing.jpg" in text


def test_missing_columns_and_no_file_check(tmp_path):
    df = pd.DataFrame({"image": ["nowhere.jpg"], "labels": ["melanoma"]})
    df.attrs["root"] = str(tmp_path)
    cols = {p.column for p in validate_manifest(df, check_files=False)}
    assert {"source", "split", "label_space"} <= cols
    assert all(p.column != "image" for p in validate_manifest(df, check_files=False))
    assert any(p.column == "image" for p in validate_manifest(df, check_files=True))


def test_lesion_crossing_splits_is_a_problem(tmp_path):
    df = _make(tmp_path)
    df.loc[1, "lesion_id"] = "L0"  # L0 now in train (row 0) and test (row 1)
    leaks = [p for p in validate_manifest(df) if p.column == "lesion_id"]
    assert len(leaks) == 1 and "L0" in leaks[0].message and "row 1" in leaks[0].message


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_roundtrip_rebases_paths(tmp_path, suffix):
    data = tmp_path / "data"
    data.mkdir()
    df = _make(data)
    out = write_manifest(df, tmp_path / "out" / f"m{suffix}")
    back = read_manifest(out)
    assert list(back.columns[: len(COLUMNS)]) == COLUMNS
    assert back["image"].tolist()[0] == "../data/img0.jpg"
    assert validate_manifest(back) == []
