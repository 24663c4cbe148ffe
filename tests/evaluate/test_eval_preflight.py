"""``dermino evaluate`` checks every backbone, weights file and manifest before computing anything."""

from __future__ import annotations

import yaml

from dermino.cli import main
from dermino.data.sample import sample_manifests

TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28}


def test_missing_weights_unknown_backbone_and_manifest_write_nothing(tmp_path, capsys):
    ham = sample_manifests(tmp_path / "manifests")["ham10000"]
    out = tmp_path / "out"
    cfg = {
        "name": "t", "out_dir": str(out), "bootstrap": 10, "progress": False,
        "embed": {"cache_dir": str(tmp_path / "cache")},
        "backbones": [
            {"name": "ok", "model": "dermino_vit_tiny_14", "overrides": TINY},
            {"name": "no-weights", "model": "dermino_vit_tiny_14", "overrides": TINY,
             "weights": str(tmp_path / "missing.safetensors")},
            {"name": "typo", "model": "dermino_vit_tinny_14"},
        ],
        "datasets": [{"name": "ham", "manifest": str(ham), "test_split": "val", "val_split": ""},
                     {"name": "gone", "manifest": str(tmp_path / "gone.csv")}],
        "protocols": ["knn"],
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nothing was computed or written" in err
    assert "'no-weights'" in err and "missing.safetensors" in err
    assert "'typo'" in err and "dermino_vit_tinny_14" in err
    assert "'gone'" in err and "gone.csv" in err
    assert "'ok'" not in err and "'ham'" not in err
    assert not out.exists() and not (tmp_path / "cache").exists()


def test_every_bad_image_of_every_dataset_is_listed_before_anything_is_written(tmp_path, capsys):
    import pandas as pd

    from dermino.data.manifest import read_manifest, write_manifest

    manifests = sample_manifests(tmp_path / "manifests")
    ham = read_manifest(manifests["ham10000"])
    root = ham.attrs["root"]
    # the first dataset is fine except one missing file; the second has a missing and a corrupt file
    train = ham.index[ham["split"] == "train"]
    first = ham.copy()
    first.loc[train[-1], "image"] = "nowhere/missing_a.jpg"
    second = ham.copy()
    second.loc[train[0], "image"] = "nowhere/missing_b.jpg"
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    second.loc[train[1], "image"] = str(corrupt)
    paths = []
    for name, df in (("first", first), ("second", second)):
        df.attrs["root"] = root
        paths.append(write_manifest(pd.DataFrame(df), tmp_path / f"{name}.csv", root=root))
    out = tmp_path / "out"
    cfg = {
        "name": "t", "out_dir": str(out), "bootstrap": 10, "progress": False,
        "embed": {"cache_dir": str(tmp_path / "cache")},
        "backbones": [{"name": "ok", "model": "dermino_vit_tiny_14", "overrides": TINY}],
        "datasets": [{"name": n, "manifest": str(p), "test_split": "val", "val_split": ""}
                     for n, p in zip(("first", "second"), paths, strict=True)],
        "protocols": ["knn"],
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "nothing was computed or written" in err
    for name in ("missing_a.jpg", "missing_b.jpg", "corrupt.jpg"):
        assert name in err, err
    assert "'first'" in err and "'second'" in err
    assert not out.exists() and not (tmp_path / "cache").exists()
