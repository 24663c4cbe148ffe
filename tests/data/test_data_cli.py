"""`dermino data ...` run in-process on the bundled sample."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from dermino.cli import main
from dermino.data.manifest import read_manifest, validate_manifest
from dermino.data.sample import sample_root


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample")
    assert main(["data", "sample", "--out", str(out)]) == 0
    return out


def test_sample_writes_valid_split_manifests(sample_dir):
    for name in ("ham10000", "ph2", "isic2017"):
        df = read_manifest(sample_dir / f"{name}.csv")
        assert validate_manifest(df) == [], name
    ham = read_manifest(sample_dir / "ham10000.csv")
    assert set(ham.split) == {"train", "val", "test"}
    assert (ham.groupby("lesion_id")["split"].nunique() == 1).all()


def test_info(sample_dir, capsys):
    assert main(["data", "info", str(sample_dir / "isic2017.csv")]) == 0
    text = capsys.readouterr().out
    assert "images: 200" in text and "class imbalance" in text and "nevus or seborrheic keratosis" in text
    assert main(["data", "info", "--json", str(sample_dir / "ham10000.csv")]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["images"] == len(read_manifest(sample_dir / "ham10000.csv"))
    assert len(s["by_label"]) == 7 and s["imbalance_ratio"] == pytest.approx(90 / 20)
    assert sum(s["by_age_band"].values()) == s["images"]


def test_check_ok_and_bad(sample_dir, tmp_path, capsys):
    assert main(["data", "check", str(sample_dir / "ph2.csv"), "--workers", "2"]) == 0
    df = read_manifest(sample_dir / "ph2.csv")
    # break three files in a copy: each one must be listed, exit code 1
    bad_dir = tmp_path / "imgs"
    bad_dir.mkdir()
    for i, (_, r) in enumerate(df.head(5).iterrows()):
        src = sample_dir / r.image
        dst = bad_dir / f"{i}.jpg"
        dst.write_bytes(b"" if i == 1 else b"junk" if i == 3 else src.read_bytes())
    (bad_dir / "4.jpg").write_bytes((bad_dir / "4.jpg").read_bytes()[:500])
    small = df.head(5).copy()
    small["image"] = [f"imgs/{i}.jpg" for i in range(5)]
    small["mask"] = ""
    small.to_csv(tmp_path / "broken.csv", index=False)
    capsys.readouterr()
    assert main(["data", "check", str(tmp_path / "broken.csv"), "--workers", "2"]) == 1
    out = capsys.readouterr().out
    assert "imgs/1.jpg" in out and "imgs/3.jpg" in out and "imgs/4.jpg" in out
    assert "imgs/0.jpg" not in out and "3 unreadable file(s)" in out


def test_prepare_on_sample_layout(tmp_path, capsys):
    out = tmp_path / "m" / "ham.parquet"
    argv = ["data", "prepare", "ham10000", "--root", str(sample_root() / "ham10000"), "--out", str(out),
            "--split-seed", "7", "--val-fraction", "0.2"]
    assert main(argv) == 0
    df = read_manifest(out)
    assert validate_manifest(df) == [] and set(df.split) == {"train", "val", "test"}
    assert main([*argv[:-4], "--out", str(tmp_path / "again.csv"), "--split-seed", "7", "--val-fraction", "0.2"]) == 0
    assert read_manifest(tmp_path / "again.csv").split.tolist() == df.split.tolist()
    assert main(["data", "prepare", "isic2017", "--root", str(sample_root() / "isic2017"),
                 "--out", str(tmp_path / "isic.csv"), "--opt", "include_test=false"]) == 0
    assert "none" not in set(read_manifest(tmp_path / "isic.csv").split)


def test_prepare_folder_csv_map(tmp_path, capsys):
    for i in range(6):
        Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / f"{i}.jpg")
    pd.DataFrame({"file": [f"{i}.jpg" for i in range(6)], "dx": ["mel", "nv"] * 3}).to_csv(tmp_path / "l.csv", index=False)
    assert main(["data", "prepare", "folder", "--root", str(tmp_path), "--csv", "l.csv",
                 "--map", "image=file,labels=dx", "--out", str(tmp_path / "m.csv"), "--val-fraction", "0"]) == 0
    df = read_manifest(tmp_path / "m.csv")
    assert sorted(df.labels.unique()) == ["melanocytic nevus", "melanoma"] and (df.split == "test").sum() == 2
    assert main(["data", "prepare", "ph2", "--root", str(tmp_path), "--map", "image=x", "--out", str(tmp_path / "x.csv")]) == 2


def test_prepare_no_images_fails(tmp_path, capsys):
    pd.DataFrame({"md5hash": ["abc"], "fitzpatrick_scale": [2], "label": ["acne"]}).to_csv(
        tmp_path / "fitzpatrick17k.csv", index=False)
    assert main(["data", "prepare", "fitzpatrick17k", "--root", str(tmp_path), "--out", str(tmp_path / "f.csv")]) == 1
    assert "no images found" in capsys.readouterr().out


def test_download_prints_instructions_for_registration_datasets(tmp_path, capsys):
    assert main(["data", "download", "ph2", "--out", str(tmp_path)]) == 0
    assert "fc.up.pt" in capsys.readouterr().out


@pytest.mark.slow
def test_check_full_ham10000(shared_data, tmp_path):
    out = tmp_path / "ham.csv"
    assert main(["data", "prepare", "ham10000", "--root", str(shared_data / "ham10000"), "--out", str(out)]) == 0
    assert main(["data", "check", str(out), "--workers", "2"]) == 0
