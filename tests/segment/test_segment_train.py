"""End-to-end on real PH2 images from the bundled sample: fit, frozen backbone, reload, CLI."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dermino.cli import main as cli_main
from dermino.config import load_config
from dermino.data.manifest import read_manifest
from dermino.data.sample import sample_manifests
from dermino.results import read_result
from dermino.segment import AugmentConfig, SegmentConfig, evaluate_segmentation, load_run, train_segmentation
from dermino.segment.data import mask_pairs
from dermino.segment.heads import build_segmentation_model
from dermino.segment.predict import evaluate_pairs

REPO = Path(__file__).resolve().parents[2]
TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 112}


@pytest.fixture(scope="module")
def ph2(tmp_path_factory) -> Path:
    """PH2 sample manifest: 27 train / 3 val / 30 test images with real lesion masks."""
    return sample_manifests(tmp_path_factory.mktemp("sample"))["ph2"]


def _cfg(manifest: Path, out: Path, **kw) -> SegmentConfig:
    base = dict(manifest=str(manifest), backbone="dermino_vit_tiny_14", backbone_overrides=TINY, out=str(out),
                img_size=[112], epochs=10, batch_size=16, lr=1e-2, bootstrap=200, progress=False, device="cpu")
    return SegmentConfig(**{**base, **kw})


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_linear_fit_beats_whole_image_baseline(ph2, tmp_path):
    cfg = _cfg(ph2, tmp_path / "run", augment=AugmentConfig(enabled=False))
    torch.manual_seed(0)
    model = build_segmentation_model(cfg)
    before = _state(model.backbone)
    run = train_segmentation(cfg, model=model)
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    history = json.loads((run / "history.json").read_text())
    assert len(history) == 10 and all("val_dice" in h for h in history)
    assert history[-1]["loss"] < history[0]["loss"]
    result = evaluate_segmentation(run, n_bootstrap=200)
    dice, baseline = result.metrics["dice"], result.extra["whole_image_baseline"]["dice"]
    # measured: Dice 0.75 vs baseline 0.50 on the 30 test images (seed 0)
    assert result.extra["n_images"] == 30 and result.extra["split"] == "test"
    assert dice.value > baseline + 0.1, (dice, baseline)
    assert dice.ci_low < dice.value < dice.ci_high
    assert result.task == "segmentation-linear" and result.dataset == "ph2"
    saved = read_result(run / "results" / "dermino_vit_tiny_14__ph2__segmentation-linear.json")
    assert saved.metrics["dice"].value == pytest.approx(dice.value)
    masks = sorted((run / "predictions" / "ph2_test").glob("*_mask.png"))
    assert len(masks) == 30 and len(list((run / "predictions" / "ph2_test").glob("*_overlay.png"))) == 30
    assert set(np.unique(np.asarray(Image.open(masks[0])))) <= {0, 255}


def test_upernet_with_augmentation_keeps_backbone_and_reloads(ph2, tmp_path):
    cfg = _cfg(ph2, tmp_path / "run", head="upernet", upernet_channels=16, img_size=[56], epochs=1,
               max_train=8, batch_size=4)
    torch.manual_seed(1)
    model = build_segmentation_model(cfg)
    before = _state(model.backbone)
    run = train_segmentation(cfg, model=model)
    assert all(torch.equal(before[k], v) for k, v in model.backbone.state_dict().items())
    assert not any(p.requires_grad for p in model.backbone.parameters())
    # the reloaded run predicts exactly what the trained model predicts (best = only epoch)
    reloaded, rcfg = load_run(run, device="cpu")
    assert rcfg.head == "upernet" and reloaded.layers == model.layers == [0, 0, 0, 1]
    pairs = mask_pairs(read_manifest(ph2), "val")
    a = evaluate_pairs(model, pairs, cfg.size_hw, progress=False)
    b = evaluate_pairs(reloaded, pairs, cfg.size_hw, progress=False)
    assert np.array_equal(a, b)


def test_never_selects_on_test_split(ph2, tmp_path):
    with pytest.raises(ValueError, match="never select on the test set"):
        train_segmentation(_cfg(ph2, tmp_path, val_split="test"))


@pytest.mark.parametrize("name", ["linear", "upernet", "tiny_cpu"])
def test_shipped_configs_load(name):
    cfg = load_config(SegmentConfig, REPO / "configs" / "segment" / f"{name}.yaml", ["manifest=m.csv"])
    cfg.validate()
    assert cfg.head in ("linear", "upernet")


def test_cli_train_evaluate_predict(ph2, tmp_path, capsys):
    run = tmp_path / "run"
    rc = cli_main(["segment", "train", "--config", str(REPO / "configs/segment/tiny_cpu.yaml"),
                   "--manifest", str(ph2), "--out", str(run), "epochs=2", "bootstrap=50", "progress=false"])
    assert rc == 0
    assert "dice" in capsys.readouterr().out
    assert (run / "head_best.pt").is_file() and (run / "results").is_dir()
    rc = cli_main(["segment", "evaluate", "--run", str(run), "--split", "val", "--out", str(tmp_path / "res"),
                   "--bootstrap", "20", "--no-predictions"])
    assert rc == 0
    res = read_result(next((tmp_path / "res").glob("*.json")))
    assert res.extra["split"] == "val" and res.extra["n_images"] == 3
    img_dir = Path(mask_pairs(read_manifest(ph2))[0].image).parent
    one = sorted(img_dir.glob("*.jpg"))[:2]
    rc = cli_main(["segment", "predict", "--run", str(run), "--images", *map(str, one), "--out", str(tmp_path / "p")])
    assert rc == 0
    mask = np.asarray(Image.open(tmp_path / "p" / f"{one[0].stem}_mask.png"))
    assert mask.shape == np.asarray(Image.open(one[0])).shape[:2] and set(np.unique(mask)) <= {0, 255}
    assert (tmp_path / "p" / f"{one[0].stem}_overlay.png").is_file()
    assert cli_main(["segment", "evaluate", "--run", str(tmp_path / "missing")]) == 2


def test_ridge_fit_only_for_a_frozen_linear_head(ph2, tmp_path):
    with pytest.raises(ValueError, match="linear_fit: ridge"):
        _cfg(ph2, tmp_path / "a", head="upernet", linear_fit="ridge").validate()
    with pytest.raises(ValueError, match="linear_fit: ridge"):
        _cfg(ph2, tmp_path / "b", linear_fit="ridge", finetune_backbone=True).validate()
    cfg = _cfg(ph2, tmp_path / "c", linear_fit="ridge", img_size=[56], max_train=8, max_val=3)
    run = train_segmentation(cfg)
    history = json.loads((run / "history.json").read_text())
    assert len(history) == 1 and history[0]["fit"] == "ridge" and 0 <= history[0]["val_dice"] <= 1
    model, _ = load_run(run)  # an ordinary linear head: the background logit is 0 everywhere
    assert torch.count_nonzero(model.head.classifier.weight[0]) == 0
