"""Similar-case index: exact search (torch and faiss agree), save/load, incremental add."""

from __future__ import annotations

import numpy as np
import pytest

from _serve_fixtures import tiny_classifier
from dermino.data.manifest import read_manifest, write_manifest
from dermino.data.sample import sample_manifests
from dermino.serve.index import CaseIndex, has_faiss
from dermino.serve.index_build import build_index


def _random_index(n=50, d=8, backend="torch", seed=0):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, d)).astype(np.float32)
    index = CaseIndex(dim=d, backend=backend)
    index.add(feats, [{"image": f"img{i}.jpg", "label": f"c{i % 3}"} for i in range(n)], [b"\xff\xd8"] * n)
    return index, feats


def test_exact_cosine_search_matches_brute_force():
    index, feats = _random_index()
    q = np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32)
    sims, idx = index.search(q, k=5)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    ref = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ unit.T
    np.testing.assert_array_equal(idx, np.argsort(-ref, axis=1)[:, :5])
    np.testing.assert_allclose(sims, np.sort(ref, axis=1)[:, ::-1][:, :5], atol=1e-5)
    assert index.search(q, k=500)[1].shape == (3, 50)  # k capped at the index size


@pytest.mark.skipif(not has_faiss(), reason="faiss-cpu not installed")
def test_faiss_and_torch_agree():
    t, _ = _random_index(backend="torch")
    f, _ = _random_index(backend="faiss")
    q = np.random.default_rng(2).normal(size=(4, 8)).astype(np.float32)
    np.testing.assert_array_equal(t.search(q, 7)[1], f.search(q, 7)[1])
    np.testing.assert_allclose(t.search(q, 7)[0], f.search(q, 7)[0], atol=1e-5)


def test_errors():
    index = CaseIndex(dim=4)
    with pytest.raises(ValueError, match="empty"):
        index.search(np.zeros((1, 4)), 3)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        index.add(np.zeros((2, 5)), [{}, {}], [b"", b""])
    with pytest.raises(ValueError, match="backend"):
        CaseIndex(dim=4, backend="annoy")


def test_build_save_load_and_append(tmp_path):
    clf = tiny_classifier()
    ham = sample_manifests(tmp_path / "m")["ham10000"]
    df = read_manifest(ham)
    train = df[df["split"] == "train"]
    first = write_manifest(train.iloc[:20], tmp_path / "first.csv", root=df.attrs.get("root"))
    out = tmp_path / "index"
    index = build_index(clf, first, out, splits=["train"], cache_dir=str(tmp_path / "c"), progress=False)
    assert len(index) == 20 and (out / "index.json").is_file() and len(list((out / "thumbs").glob("*.jpg"))) == 20
    loaded = CaseIndex.load(out)
    np.testing.assert_array_equal(loaded.embeddings.numpy(), index.embeddings.numpy())
    assert loaded.records[3]["label"] == index.records[3]["label"] and loaded.thumbs[3] == index.thumbs[3]
    assert {"sex", "age", "lesion_id"} <= set(loaded.records[0])
    # append: the first 20 are kept, only the new rows are embedded and added
    both = write_manifest(train.iloc[:30], tmp_path / "both.csv", root=df.attrs.get("root"))
    grown = build_index(clf, both, out, splits=["train"], append=True, cache_dir=str(tmp_path / "c"),
                        progress=False)
    assert len(grown) == 30 and len(CaseIndex.load(out)) == 30
    np.testing.assert_array_equal(grown.embeddings[:20].numpy(), index.embeddings.numpy())
    # a different backbone cannot add to this index
    with pytest.raises(ValueError, match="different model"):
        build_index(tiny_classifier(seed=3), both, out, splits=["train"], append=True,
                    cache_dir=str(tmp_path / "c"), progress=False)


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        CaseIndex.load(tmp_path)
    index, _ = _random_index(n=3)
    out = index.save(tmp_path / "i")
    (out / "thumbs" / "0000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="0000001.jpg"):
        CaseIndex.load(out)
