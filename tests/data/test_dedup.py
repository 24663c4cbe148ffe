"""Dedup finds planted exact and near copies of real images, and no pairs of distinct lesions."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermino.data import dedup
from dermino.data.adapters import ham10000
from dermino.data.manifest import read_manifest, write_manifest
from dermino.data.sample import sample_manifests, sample_root


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Sample manifests + an 'evaluation' manifest of altered copies of six real corpus images."""
    tmp = tmp_path_factory.mktemp("dedup")
    mans = sample_manifests(tmp / "manifests")
    ham = read_manifest(mans["ham10000"])
    isic = read_manifest(mans["isic2017"])
    origins = [ham.image.iat[0], ham.image.iat[40], ham.image.iat[80], isic.image.iat[5], isic.image.iat[60],
               isic.image.iat[100]]
    roots = [ham.attrs["root"]] * 3 + [isic.attrs["root"]] * 3
    out = tmp / "planted"
    out.mkdir()
    rows = []
    for k, (rel, root) in enumerate(zip(origins, roots, strict=True)):
        src = (Path(root) / rel).resolve()
        im = Image.open(src).convert("RGB")
        w, h = im.size
        kind = ("exact", "resized", "cropped")[k % 3]
        dst = out / f"copy{k}_{kind}.jpg"
        if kind == "exact":
            shutil.copyfile(src, dst)
        elif kind == "resized":  # half size, recompressed at quality 60
            buf = io.BytesIO()
            im.resize((w * 3 // 4, h * 3 // 4), Image.BICUBIC).save(buf, "JPEG", quality=60)
            dst.write_bytes(buf.getvalue())
        else:  # 2 % cut from each border, recompressed
            im.crop((w // 50, h // 50, w - w // 50, h - h // 50)).save(dst, "JPEG", quality=85)
        rows.append({"image": dst.name, "source": "planted", "split": "test", "labels": "", "label_space": "",
                     "origin": str(src)})
    df = pd.DataFrame(rows)
    df.attrs["root"] = str(out)
    test_manifest = write_manifest(df, out / "planted.csv")
    return tmp, mans, test_manifest, [r["origin"] for r in rows]


def test_phash_golden_and_candidates():
    # a hash is 64 bits; identical images hash equal; candidates match a brute-force scan
    im = Image.open(next((sample_root() / "ph2" / "images").glob("*.jpg"))).convert("RGB")
    assert dedup.phash(im) == dedup.phash(im.copy()) and 0 < dedup.phash(im) < 2**64
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    flips = np.array([sum(1 << int(b) for b in rng.choice(64, k, replace=False)) for k in rng.integers(0, 12, 300)],
                     dtype=np.uint64)
    h = np.concatenate([base, base ^ flips])
    pairs, dist = dedup.candidate_pairs(h, max_hamming=11, probe_radius=2)
    brute = {(i, j) for i in range(len(h)) for j in range(i + 1, len(h))
             if bin(int(h[i]) ^ int(h[j])).count("1") <= 11}
    assert {tuple(p) for p in pairs.tolist()} == brute and len(brute) >= 300
    assert all(bin(int(h[i]) ^ int(h[j])).count("1") == d for (i, j), d in zip(pairs.tolist(), dist, strict=True))


def test_finds_planted_and_no_false_pairs(planted):
    tmp, mans, test_manifest, origins = planted
    cfg = dedup.DedupConfig(cache_dir=str(tmp / "cache"))
    res = dedup.find_duplicates(list(mans.values()), [test_manifest], cfg, progress=False)
    t, pairs = res.table, res.pairs
    path_of = dict(enumerate(t.path))
    found = {}
    for p in pairs.itertuples():
        a, b = path_of[p.i], path_of[p.j]
        found[(a, b)] = found[(b, a)] = p.kind
    planted_paths = t[t.role == "against"].path.tolist()
    for k, (copy, origin) in enumerate(zip(sorted(planted_paths), origins, strict=True)):
        assert (str(origin), copy) in found, f"planted copy {copy} of {origin} not found"
        assert found[(str(origin), copy)] == ("exact" if k % 3 == 0 else "near")
    # corpus-corpus pairs: only images of one lesion (HAM10000 photographs a lesion several times)
    ham = ham10000.build_manifest(sample_root() / "ham10000")
    lesion = {str((sample_root() / "ham10000" / r).resolve()): les for r, les in zip(ham.image, ham.lesion_id, strict=True)}
    inner = pairs[pairs.roles == "corpus-corpus"]
    false = [(a, b) for a, b in zip(inner.path_i, inner.path_j, strict=True)
             if lesion.get(str(Path(a).resolve()), a) != lesion.get(str(Path(b).resolve()), b)]
    assert false == [], false
    # every origin is dropped from the filtered corpus; the corpus otherwise keeps one per cluster
    kept = set(t[(t.role == "corpus") & t.keep].path)
    assert not kept & {str(o) for o in origins}
    assert res.stats["corpus_dropped_as_test_overlap"] == 6
    planted_rows = pairs[pairs.roles == "corpus-against"]
    assert set(planted_rows.split_j) == {"test"} and "cross_split_within_manifest" in res.stats


def test_cli_outputs_and_resume(planted, monkeypatch, capsys):
    from dermino.cli import main

    tmp, mans, test_manifest, origins = planted
    out, cache = tmp / "out", tmp / "cache_cli"
    argv = ["data", "dedup", str(mans["ham10000"]), str(mans["isic2017"]), "--against", str(test_manifest),
            "--out", str(out), "--cache-dir", str(cache)]
    assert main(argv) == 0
    assert "exact" in capsys.readouterr().out
    html = (out / "report.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 12 and "corpus-against" in html
    filtered = read_manifest(out / "ham10000.dedup.csv")
    assert 0 < len(filtered) < len(read_manifest(mans["ham10000"]))
    assert (filtered.image.map(lambda v: (out / v).resolve().is_file())).all()
    # a rerun reads every hash from the chunk cache: hashing a file now would fail
    monkeypatch.setattr(dedup, "hash_file", lambda p: (_ for _ in ()).throw(AssertionError(f"rehashed {p}")))
    assert main(argv) == 0


def test_overlap_guard(planted, caplog):
    tmp, mans, test_manifest, _ = planted
    corpus = pd.concat([read_manifest(mans["ham10000"]).assign(image=lambda d: [
        str((Path(d.attrs["root"]) / v).resolve()) for v in d.image])])
    corpus.attrs["root"] = "/"
    with pytest.raises(ValueError, match=r"pretraining image\(s\) duplicate"):
        dedup.check_overlap(corpus, [test_manifest], "refuse", cache_dir=str(tmp / "c2"))
    assert dedup.check_overlap(corpus, [test_manifest], "warn", cache_dir=str(tmp / "c2")) >= 1
    assert dedup.check_overlap(corpus, [mans["ph2"]], "refuse", cache_dir=str(tmp / "c2")) == 0
    assert dedup.check_overlap(corpus, [test_manifest], "off") == 0


def test_pretraining_refuses_overlap_with_eval_manifests(planted, tmp_path, monkeypatch, caplog):
    from dermino.pretrain.config import tiny_config, validate
    from dermino.pretrain.trainer import load_pretrain_manifest

    _, mans, test_manifest, _ = planted
    monkeypatch.chdir(tmp_path)  # the hash cache goes under the working directory
    cfg = tiny_config(str(tmp_path / "run"))
    cfg.data.manifests = [str(mans["ham10000"]), str(mans["isic2017"])]
    cfg.data.exclude_overlap_with = [str(test_manifest)]
    cfg.data.splits = []
    with pytest.raises(ValueError, match="overlap_policy=warn"):
        load_pretrain_manifest(cfg, tmp_path)
    cfg.data.overlap_policy = "warn"
    assert len(load_pretrain_manifest(cfg, tmp_path)) > 0
    assert "duplicate evaluation images" in caplog.text
    cfg.data.overlap_policy = "refuse"
    cfg.data.exclude_overlap_with = [str(mans["ph2"])]
    assert len(load_pretrain_manifest(cfg, tmp_path)) > 0
    cfg.data.overlap_policy = "maybe"
    with pytest.raises(ValueError, match="overlap_policy"):
        validate(cfg)
