"""The pre-resized image cache: exact round trip, resume after a kill, same samples, corrupt shards."""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermino.cli import main
from dermino.data.cache import ImageCache, build_cache, open_for_rows, plan_images, resize_short, verify_cache
from dermino.data.datasets import MultiCropCollate, PretrainDataset, ResumableSampler
from dermino.data.images import ImageReadError, read_rgb
from dermino.data.manifest import read_manifest, resolve, write_manifest
from dermino.data.masking import MaskingConfig
from dermino.data.sample import sample_manifests
from dermino.data.transforms import CropsConfig, MultiCropTransform

REPO = Path(__file__).resolve().parents[2]
SIZE = 96  # below the sample's 150 px short side, so every image is really resized


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """12 real sample images (HAM10000 + PH2, different sizes) in one manifest."""
    folder = tmp_path_factory.mktemp("manifests")
    paths = sample_manifests(folder)
    parts = []
    for name, n in (("ham10000", 8), ("ph2", 4)):
        df = read_manifest(paths[name])
        df["image"] = [str(resolve(df, v)) for v in df["image"]]
        parts.append(df.head(n))
    df = pd.concat(parts, ignore_index=True)
    return write_manifest(df, folder / "mixed.csv", root="/")


@pytest.fixture(scope="module")
def cache_dir(manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "c"
    build_cache([manifest], out, size=SIZE, shard_size=5, workers=2, progress=False)
    return out


def test_round_trip_is_exact_at_the_stored_size(manifest, cache_dir):
    cache = ImageCache(cache_dir)
    paths = plan_images([manifest])
    assert len(cache) == len(paths) == 12 and cache.size == SIZE
    for p in paths:
        want = resize_short(read_rgb(p), SIZE)
        got = cache.read(p)
        assert min(got.size) == SIZE and got.size == want.size
        assert np.array_equal(np.asarray(got), np.asarray(want))
    report = verify_cache(cache_dir)
    assert (report.images, report.shards, report.bad_shards, report.failed) == (12, 3, {}, {})


def test_jpeg_cache_is_close_and_smaller(manifest, tmp_path):
    build_cache([manifest], tmp_path / "j", size=SIZE, fmt="jpg", quality=90, shard_size=100, workers=0, progress=False)
    cache = ImageCache(tmp_path / "j")
    p = plan_images([manifest])[0]
    want = np.asarray(resize_short(read_rgb(p), SIZE), dtype=np.float32)
    got = np.asarray(cache.read(p), dtype=np.float32)
    assert got.shape == want.shape and np.abs(got - want).mean() < 4.0


def test_shards_are_webdataset_tars(cache_dir):
    wds = pytest.importorskip("webdataset")
    urls = sorted(str(p) for p in cache_dir.glob("shard-*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(samples) == 12
    cache = ImageCache(cache_dir)
    for s in samples[:3]:
        assert np.array_equal(np.asarray(s["png"].convert("RGB")), np.asarray(cache.read(s["json"]["path"])))


def _entries(folder: Path) -> list[str]:
    return [m["path"] for r in json.loads((folder / "index.json").read_text())["shards"] for m in r["members"]]


def test_killed_build_resumes_without_duplicates(manifest, tmp_path):
    """SIGKILL a real build after two shards, then rerun: done shards kept, the rest added once."""
    out = tmp_path / "k"
    script = (
        "import sys, time\n"
        "from dermino.data.cache import build_cache\n"
        f"build_cache([{str(manifest)!r}], {str(out)!r}, size={SIZE}, shard_size=2, workers=0, progress=False,\n"
        "            on_shard_done=lambda rec: time.sleep(0.4))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env)
    deadline = time.time() + 120
    while len(list(out.glob("shard-*.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = sorted(out.glob("shard-*.json"))
    assert 2 <= len(done_before) < 6, "the build should have been killed part-way"
    assert not (out / "index.json").exists()
    with pytest.raises(FileNotFoundError, match="did not finish"):
        ImageCache(out)
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    # a shard renamed into place whose done record was never written is rebuilt, not trusted
    (out / "shard-000005.tar").write_bytes(b"half a shard")
    built = []
    report = build_cache([manifest], out, size=SIZE, shard_size=2, workers=0, progress=False,
                         on_shard_done=lambda rec: built.append(rec["shard"]))
    assert report.images == 12 and report.built_shards == 6 - len(done_before)
    assert sorted(built) == sorted(f"shard-{i:06d}.tar" for i in range(6) if out / f"shard-{i:06d}.json" not in done_before)
    for name, mtime in kept.items():
        if out / name.replace(".tar", ".json") in done_before:
            assert (out / name).stat().st_mtime_ns == mtime  # not rewritten
    paths = _entries(out)
    assert sorted(paths) == sorted(plan_images([manifest])) and len(set(paths)) == len(paths)
    assert not list(out.glob("*.tmp*"))
    assert verify_cache(out).bad_shards == {}


def test_other_settings_on_the_same_folder_are_refused(manifest, cache_dir):
    with pytest.raises(ValueError, match="other settings.*size"):
        build_cache([manifest], cache_dir, size=SIZE + 14, shard_size=5, progress=False)


def test_loader_over_cache_yields_the_same_samples_as_over_resized_originals(manifest, cache_dir):
    df = read_manifest(manifest)
    paths = [str(p) for p in plan_images([manifest])]
    df["image"] = paths
    cache = open_for_rows(cache_dir, paths)
    crops = CropsConfig(global_size=56, local_size=28, n_local=2)
    collate = MultiCropCollate(14, MaskingConfig(), seed=3)

    def batches(reader, n=3):
        ds = PretrainDataset(df, MultiCropTransform(crops), reader=reader)
        sampler = ResumableSampler(len(df), seed=3)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, collate_fn=collate, num_workers=0)
        return list(itertools.islice(loader, n))

    from_cache = batches(cache)
    from_files = batches(lambda p: resize_short(read_rgb(p), SIZE))
    assert len(from_cache) == 3
    for a, b in zip(from_cache, from_files, strict=True):
        assert torch.equal(a["rows"], b["rows"])
        assert torch.equal(a["global_crops"], b["global_crops"]) and torch.equal(a["local_crops"], b["local_crops"])
        assert torch.equal(a["masks"], b["masks"])
    # and the cache is really what is read: full-size originals give other crops
    full = batches(read_rgb, n=1)
    assert not torch.equal(full[0]["global_crops"], from_cache[0]["global_crops"])


def test_missing_rows_are_named(manifest, cache_dir, tmp_path):
    other = tmp_path / "other.jpg"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match=r"lacks 1 of the 13 .*other\.jpg"):
        open_for_rows(cache_dir, [*plan_images([manifest]), str(other)])


def test_corrupt_shard_is_reported_by_name_and_skipped(manifest, tmp_path, caplog, capsys):
    bad = tmp_path / "bad"
    build_cache([manifest], bad, size=SIZE, shard_size=5, workers=0, progress=False)
    index = json.loads((bad / "index.json").read_text())
    victim = index["shards"][1]
    member = victim["members"][0]
    with open(bad / victim["shard"], "r+b") as fh:  # flip bytes inside one stored image, size unchanged
        fh.seek(member["offset"] + member["nbytes"] // 2)
        fh.write(b"\x00\xff\x00\xff")
    # a full verification names the shard (CLI exits 1)
    report = verify_cache(bad)
    assert list(report.bad_shards) == [victim["shard"]] and "sha256" in report.bad_shards[victim["shard"]]
    assert main(["data", "cache-verify", str(bad)]) == 1
    assert f"BAD {bad / victim['shard']}" in capsys.readouterr().out
    # the quick open (sizes only) still catches the member when it is read, naming the shard
    cache = ImageCache(bad)
    with pytest.raises(ImageReadError, match=rf"{victim['shard']}.*sha256"):
        cache.read(member["path"])
    # a full open drops the whole shard, logged by name
    with caplog.at_level(logging.ERROR, logger="dermino.data.cache"):
        cache = ImageCache(bad, verify="full")
    assert victim["shard"] in caplog.text and "skipped" in caplog.text
    with pytest.raises(ImageReadError, match="unusable"):
        cache.read(victim["members"][1]["path"])
    # the pretraining dataset skips those images (logged), reproducibly replacing them
    df = read_manifest(manifest)
    df["image"] = plan_images([manifest])
    ds = PretrainDataset(df, MultiCropTransform(CropsConfig(global_size=56, local_size=28, n_local=1)), reader=cache)
    row = df["image"].tolist().index(member["path"])
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dermino.data.datasets"):
        sample = ds[(row, 7)]
    assert sample["row"] != row and "unusable" in caplog.text
    # a truncated shard is caught by the size check at open
    with open(bad / index["shards"][0]["shard"], "r+b") as fh:
        fh.truncate(1000)
    assert index["shards"][0]["shard"] in ImageCache(bad).bad_shards


def test_trainer_and_evaluation_read_the_cache(manifest, cache_dir, tmp_path):
    from dermino.features import EmbedConfig, extract_embeddings
    from dermino.models import create
    from dermino.pretrain.config import tiny_config
    from dermino.pretrain.trainer import Trainer

    cfg = tiny_config(str(tmp_path / "run"))
    cfg.data.manifests = [str(manifest)]
    cfg.data.splits = []
    cfg.data.cache = str(cache_dir)
    trainer = Trainer(cfg)
    assert isinstance(trainer.dataset.reader, ImageCache)
    batch = next(trainer.batches())
    assert batch["global_crops"].shape == (8, 3, 56, 56)

    model = create("dermino_vit_tiny_14", depth=1, embed_dim=32, num_heads=2, img_size=28)
    df = read_manifest(manifest)
    base = EmbedConfig(image_size=28, cache_dir=str(tmp_path / "emb"), batch_size=12, pool="mean")
    plain = extract_embeddings(model, df, base, progress=False)
    cached = extract_embeddings(model, df, EmbedConfig(**{**base.__dict__, "image_cache": str(cache_dir)}), progress=False)
    assert cached.key != plain.key and cached.features.shape == plain.features.shape
    assert np.abs(cached.features - plain.features).max() > 1e-3  # other pixels, other features
