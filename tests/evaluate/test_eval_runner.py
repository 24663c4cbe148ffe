"""End to end: ``dermino evaluate`` on a small real HAM10000 manifest writes results, tables, plots."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from dermino.cli import main
from dermino.data.manifest import conform, write_manifest
from dermino.evaluate.config import DatasetSpec
from dermino.evaluate.runner import prepare_dataset
from dermino.results import read_results


def write_ham_manifest(shared_data: Path, path: Path, n_per_class: int = 12, with_val: bool = False) -> Path:
    meta = pd.read_csv(shared_data / "ham10000" / "HAM10000_metadata.csv").sort_values("image_id")
    meta = pd.concat([meta[meta.dx == dx].head(n_per_class) for dx in ("nv", "mel", "bkl")])
    lesions = sorted(meta.lesion_id.unique())
    rng = np.random.default_rng(0)
    test_lesions = set(rng.choice(lesions, size=len(lesions) // 3, replace=False))
    split = ["test" if lid in test_lesions else "train" for lid in meta.lesion_id]
    if with_val:
        split = ["val" if s == "train" and i % 5 == 0 else s for i, s in enumerate(split)]
    root = shared_data / "ham10000"
    df = conform(pd.DataFrame({
        "image": [str(root / "images" / f"{i}.jpg") for i in meta.image_id],
        "mask": [str(root / "masks_200x150" / f"{i}_segmentation.png") for i in meta.image_id],
        "source": "ham10000", "split": split, "labels": meta.dx.tolist(), "label_space": "nv;mel;bkl",
        "lesion_id": meta.lesion_id.tolist(), "sex": meta.sex.fillna("").tolist(),
        "age": meta.age.astype(str).tolist(),
    }))
    return write_manifest(df, path)


def test_prepare_dataset_carves_val_by_lesion(shared_data, tmp_path):
    m = write_ham_manifest(shared_data, tmp_path / "ham.csv")
    ds = prepare_dataset(DatasetSpec(name="ham", manifest=str(m), val_fraction=0.3))
    assert ds.class_names == ["bkl", "mel", "nv"]
    assert (ds.split == "val").sum() > 0 and set(ds.split) == {"train", "val", "test"}
    for g in np.unique(ds.groups):
        assert len(set(ds.split[ds.groups == g])) == 1, "a lesion straddles splits"
    binary = prepare_dataset(DatasetSpec(name="ham", manifest=str(m), positive="mel"))
    assert binary.class_names == ["not mel", "mel"] and binary.y.sum() == 12
    with pytest.raises(ValueError, match="no labelled rows with split"):
        prepare_dataset(DatasetSpec(name="ham", manifest=str(m), test_split="holdout"))


def test_evaluate_end_to_end(shared_data, tmp_path, capsys):
    m = write_ham_manifest(shared_data, tmp_path / "ham.csv")
    tiny = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28}
    cfg = {
        "name": "t", "out_dir": str(tmp_path / "out"), "bootstrap": 40, "progress": False,
        "backbones": [
            {"name": "tiny-a", "model": "dermino_vit_tiny_14", "overrides": tiny},
            {"name": "tiny-b", "model": "dermino_vit_tiny_14", "overrides": {**tiny, "depth": 3}},
        ],
        "datasets": [{"name": "ham-small", "manifest": str(m)}],
        "protocols": ["knn", "linear", "fewshot", "fairness", "calibration"],
        "embed": {"image_size": 28, "batch_size": 16, "cache_dir": str(tmp_path / "cache")},
        "linear": {"epochs": 5, "weight_decays": [0.0, 0.01]},
        "fewshot": {"shots": [1, 2], "fractions": [0.5, 1.0], "seeds": 2},
        "fairness": {"attributes": ["sex", "age", "skin_tone"], "min_group_size": 2},
        "calibration": {"min_group_size": 2},
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "--config", str(path), "bootstrap=30"]) == 0
    out = tmp_path / "out"
    results = read_results(out / "results")
    cells = {(r.backbone, r.task) for r in results}
    for bb in ("tiny-a", "tiny-b"):
        for task in ("knn", "linear", "fewshot", "fairness-linear"):
            assert (bb, task) in cells
    lin = next(r for r in results if r.backbone == "tiny-a" and r.task == "linear")
    auc = lin.metrics["auroc"]
    assert 0 <= auc.ci_low <= auc.value <= auc.ci_high <= 1
    assert lin.config["bootstrap"] == 30 and lin.code_version
    assert set(lin.extra["per_class"]) == {"bkl", "mel", "nv"}
    assert lin.extra["selection"]["probe"] == "lbfgs" and lin.extra["selection"]["C"] > 0
    cal = next(r for r in results if r.backbone == "tiny-a" and r.task == "calibration-linear")
    assert cal.extra["report"]["fitted_on"] == "val" and 0 <= cal.metrics["ece"].value <= 1
    assert any(k.startswith("ece|sex=") for k in cal.metrics) and any(k.startswith("tpr_gap|sex") for k in cal.metrics)
    fair = next(r for r in results if r.task == "fairness-linear")
    assert {"sex", "age", "skin_tone"} <= set(fair.extra["attributes"])
    md = (out / "tables" / "summary.md").read_text()
    assert "tiny-b" in md and "Few-shot" in md and "[" in md
    assert (out / "tables" / "summary.csv").is_file() and (out / "tables" / "summary.html").is_file()
    import pandas as pd

    summary = pd.read_csv(out / "tables" / "summary.csv", keep_default_na=False)
    lin_rows = summary[summary.protocol == "linear"]
    assert lin_rows["ece"].str.match(r"^0\.\d{3}").all()  # beside AUROC on the calibrated protocol
    assert lin_rows["largest_eo_gap"].str.contains(r"\|class=").all()
    assert (summary[summary.protocol == "knn"]["ece"] == "").all()
    comps = json.loads((out / "tables" / "comparisons.json").read_text())
    assert {c["task"] for c in comps} == {"knn", "linear"} and all(0 < c["p_value"] <= 1 for c in comps)
    pngs = {p.name for p in (out / "plots").glob("*.png")}
    assert "bars_ham-small.png" in pngs and "fewshot_ham-small.png" in pngs
    assert any(n.startswith("fairness_") for n in pngs)
    assert "summary.md" in capsys.readouterr().out


def test_bad_config_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"backbones": [{"name": "x"}], "datasets": [], "protocls": []}))
    assert main(["evaluate", "--config", str(path)]) == 2
    assert "unknown key" in capsys.readouterr().err


def test_assign_split_when_manifest_has_none(shared_data, tmp_path):
    m = write_ham_manifest(shared_data, tmp_path / "ham.csv")
    df = pd.read_csv(m, dtype=str, keep_default_na=False)
    df["split"] = ""
    df.to_csv(m, index=False)
    ds = prepare_dataset(DatasetSpec(name="ham", manifest=str(m), assign_test_fraction=0.5))
    assert 0.3 < (ds.split == "test").mean() < 0.7
    for g in np.unique(ds.groups):
        assert len(set(ds.split[ds.groups == g])) == 1


@pytest.mark.parametrize("name", ["sample.yaml", "ham10000_isic2017.yaml"])
def test_shipped_configs_load(name):
    from dermino.config import load_config
    from dermino.evaluate.config import EvalConfig

    cfg = load_config(EvalConfig, Path(__file__).resolve().parents[2] / "configs" / "eval" / name)
    cfg.validate()
    assert cfg.backbones and cfg.datasets
    for ds in cfg.datasets:
        assert not Path(ds.manifest).is_absolute()


def test_ordinal_grades_add_quadratic_weighted_kappa(tmp_path, capsys):
    """A graded task (PH2: common nevus < atypical nevus < melanoma) reports QWK with a CI, equal to
    scikit-learn's on the saved predictions; ordinal without an ordered class list is refused."""
    from sklearn.metrics import cohen_kappa_score

    from dermino.data.sample import sample_manifests

    ph2 = sample_manifests(tmp_path / "m")["ph2"]
    grades = ["common nevus", "atypical nevus", "melanoma"]
    cfg = {
        "name": "grades", "out_dir": str(tmp_path / "out"), "bootstrap": 40, "progress": False,
        "backbones": [{"name": "tiny", "model": "dermino_vit_tiny_14",
                       "overrides": {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 28}}],
        "datasets": [{"name": "ph2", "manifest": str(ph2), "classes": grades, "ordinal": True, "val_split": ""}],
        "protocols": ["knn"], "embed": {"image_size": 28, "cache_dir": str(tmp_path / "cache")},
    }
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "--config", str(path)]) == 0
    (res,) = read_results(tmp_path / "out" / "results")
    qwk = res.metrics["qwk"]
    assert qwk.ci_low is not None and qwk.ci_low <= qwk.value <= qwk.ci_high
    saved = np.load(tmp_path / "out" / "predictions" / "tiny__ph2__knn.npz")
    assert qwk.value == pytest.approx(cohen_kappa_score(saved["y_true"], saved["pred"], weights="quadratic"))
    assert list(saved["class_names"]) == grades
    cfg["datasets"][0]["classes"] = []
    path.write_text(yaml.safe_dump(cfg))
    assert main(["evaluate", "--config", str(path)]) == 2 and "ordinal needs" in capsys.readouterr().err
