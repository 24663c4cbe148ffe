"""Manifest read errors name the file and line; nothing under a folder is dropped silently; caches
never land in the cwd; progress is log lines, not carriage returns, when output is not a terminal."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import pytest

from dermino.cli import main
from dermino.data.manifest import read_manifest
from dermino.data.sample import sample_manifests
from dermino.progress import LogProgress, tqdm

SAMPLE_IMAGES = sorted((__import__("dermino").__path__[0] + "/sample_data/ham10000/images/" + n)
                       for n in os.listdir(__import__("dermino").__path__[0] + "/sample_data/ham10000/images"))


def test_empty_manifest_is_named(tmp_path, capsys):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(ValueError, match=r"empty\.csv: the manifest is empty"):
        read_manifest(path)
    assert main(["data", "info", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_latin1_manifest_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "latin1.csv"
    path.write_bytes("image,labels\na.jpg,nevus\nb.jpg,caf\u00e9-au-lait macule\n".encode("latin-1"))
    with pytest.raises(ValueError) as err:
        read_manifest(path)
    assert f"{path}, line 3, column 10: byte 0xe9 is not UTF-8" in str(err.value)
    assert main(["data", "info", str(path)]) == 2
    assert "line 3" in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_prepare_folder_lists_symlink_loops_and_broken_links(tmp_path, capsys):
    root = tmp_path / "photos"
    (root / "melanoma").mkdir(parents=True)
    for src in SAMPLE_IMAGES[:3]:
        shutil.copy(src, root / "melanoma")
    (root / "melanoma" / "loop").symlink_to("..", target_is_directory=True)  # a folder cycle
    (root / "melanoma" / "self.jpg").symlink_to("self.jpg")  # a link to itself
    (root / "melanoma" / "gone.jpg").symlink_to("nowhere.jpg")
    out = tmp_path / "m.csv"
    assert main(["data", "prepare", "folder", "--root", str(root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 images" in printed and "3 entries skipped" in printed
    listed = (tmp_path / "m.skipped.txt").read_text().splitlines()
    reasons = dict(line.split("\t") for line in listed)
    assert reasons[str(root / "melanoma" / "loop")].startswith("symlink loop")
    assert reasons[str(root / "melanoma" / "self.jpg")] == "symlink loop"
    assert reasons[str(root / "melanoma" / "gone.jpg")] == "broken symlink"


def test_embed_writes_no_cache_in_the_cwd(tmp_path, monkeypatch, capsys):
    ph2 = sample_manifests(tmp_path / "manifests")["ph2"]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DERMINO_CACHE", str(tmp_path / "user_cache"))
    out = tmp_path / "out" / "feats.npy"
    args = ["embed", "--backbone", "dermino_vit_tiny_14", "--manifest", str(ph2), "--set", "image_size=28",
            "--model-arg", "depth=1", "embed_dim=32", "num_heads=2", "img_size=28"]
    assert main([*args, "--out", str(out)]) == 0
    assert out.is_file() and list((tmp_path / "out" / "cache" / "embeddings").glob("*/meta.json"))
    assert main(args) == 0  # no --out: the documented cache folder
    assert list((tmp_path / "user_cache" / "embeddings").glob("*/meta.json"))
    assert list(cwd.iterdir()) == []
    capsys.readouterr()


def test_progress_is_periodic_log_lines_when_not_a_terminal(caplog, capfd):
    assert not isinstance(tqdm(range(3), disable=True), type(None))
    with caplog.at_level(logging.INFO, logger="dermino.progress"):
        bar = tqdm(range(5), desc="work", unit="img")  # pytest's stderr is not a terminal
        assert isinstance(bar, LogProgress)
        bar.every = 0.0
        assert list(bar) == [0, 1, 2, 3, 4]
        manual = LogProgress(total=10, desc="steps", initial=4, every=3600)
        manual.update(2)
        manual.set_postfix(loss="0.5")
        manual.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("work: 1/5 img (20%)") and lines[4].startswith("work: 5/5 img (100%)")
    assert lines[-1].startswith("steps: 6/10 it (60%)") and lines[-1].endswith("[loss=0.5]")
    assert len([m for m in lines if m.startswith("steps")]) == 1  # rate-limited: only the final line
    assert "\r" not in capfd.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks")
def test_a_file_reachable_by_two_paths_is_indexed_once(tmp_path, caplog):
    from dermino.data.adapters import folder

    images = [Path(p) for p in SAMPLE_IMAGES[:4]]
    root = tmp_path / "photos"
    (root / "melanoma").mkdir(parents=True)
    for src in images[:3]:
        shutil.copy(src, root / "melanoma")
    (root / "Melanoma_copy").symlink_to("melanoma", target_is_directory=True)  # sorts first
    (root / "nevus").mkdir()
    shutil.copy(images[3], root / "nevus")
    (root / "nevus" / "also.jpg").symlink_to(root / "melanoma" / images[0].name)  # a linked file
    with caplog.at_level("WARNING"):
        df = folder.build_manifest(root)
    resolved = [str((root / p).resolve()) for p in df["image"]]
    assert len(df) == 4 and len(set(resolved)) == 4, df[["image", "labels"]]
    # the paths without a link in them are kept, with their folder's label
    assert sorted(df["image"]) == sorted([f"melanoma/{p.name}" for p in images[:3]]
                                         + [f"nevus/{images[3].name}"])
    assert set(df.loc[df["image"].str.startswith("melanoma/"), "labels"]) == {"melanoma"}
    warned = caplog.text
    for p in images[:3]:
        assert f"Melanoma_copy/{p.name}" in warned and f"melanoma/{p.name}" in warned
    assert "nevus/also.jpg" in warned
    assert len(df.attrs["skipped_entries"]) == 4


def test_classifier_index_and_dedup_write_no_cache_in_the_cwd(tmp_path, monkeypatch):
    import torch

    from _serve_fixtures import TINY
    from dermino.classifier.model import load_classifier
    from dermino.classifier.train import ClassifierConfig, train_classifier
    from dermino.data.dedup import DedupConfig, compute_hashes
    from dermino.models import create
    from dermino.serve.index_build import build_index

    ham = sample_manifests(tmp_path / "manifests")["ham10000"]
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DERMINO_CACHE", str(tmp_path / "user_cache"))
    runs = tmp_path / "runs"
    cfg = ClassifierConfig(manifest=str(ham), out=str(runs / "clf"), backbone="dermino_vit_tiny_14",
                           backbone_overrides=dict(TINY), image_size=56, epochs=2, n_resamples=10,
                           weight_decays=[0.0])
    torch.manual_seed(0)
    train_classifier(cfg, backbone=create("dermino_vit_tiny_14", **TINY))
    cached = sorted((runs / "cache" / "embeddings").glob("*/meta.json"))
    assert cached  # beside the classifier's folder
    build_index(load_classifier(runs / "clf"), ham, runs / "index", splits=["train"], progress=False)
    assert set(cached) < set((runs / "cache" / "embeddings").glob("*/meta.json"))  # the same cache folder
    compute_hashes([Path(p) for p in SAMPLE_IMAGES[:2]], DedupConfig(), progress=False)
    assert list((tmp_path / "user_cache" / "dedup" / "hashes").iterdir())
    assert list(cwd.iterdir()) == []


def test_a_manifest_without_an_image_column_is_one_clear_line(tmp_path, capsys):
    path = tmp_path / "mine.csv"
    path.write_text("file,labels\na.jpg,melanoma\n")
    assert main(["data", "check", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no 'image' column" in err and "file, labels" in err, err
