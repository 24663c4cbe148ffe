"""The periodic kNN monitor: majority vote logic and an end-to-end call on real images."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from dermino.data.manifest import read_manifest
from dermino.data.sample import sample_manifests
from dermino.models import create
from dermino.pretrain.monitor import knn_accuracy, knn_predict


def test_knn_majority_vote_and_tie_break():
    bank = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.0, 1.0], [0.1, 0.9]]), dim=1)
    labels = ["a", "a", "a", "b", "b"]
    q = torch.nn.functional.normalize(torch.tensor([[0.05, 1.0], [1.0, 0.05]]), dim=1)
    assert knn_predict(bank, labels, q, k=3) == ["b", "a"]
    # k=2 with one vote each: the nearest neighbour's label wins
    assert knn_predict(bank, ["a", "b", "c", "d", "e"], q[:1], k=2) == ["d"]


def test_knn_accuracy_on_sample(tmp_path):
    ham = read_manifest(sample_manifests(tmp_path)["ham10000"])
    train = ham[ham["split"] == "train"].head(24)
    val = ham[ham["split"] == "test"].head(12)
    train.attrs, val.attrs = ham.attrs, ham.attrs
    torch.manual_seed(0)
    model = create("dermino_vit_tiny_14", depth=2, embed_dim=64, num_heads=2, img_size=56)
    acc = knn_accuracy(model, train, val, size=56, device=torch.device("cpu"))
    assert 0.0 <= acc <= 1.0
    # the same set as memory and query: every image finds itself first, so k=1 is perfect
    assert knn_accuracy(model, val, val, size=56, device=torch.device("cpu"), k=1) == 1.0
    unlabelled = val.assign(labels="")
    with pytest.raises(ValueError, match="labelled"):
        knn_accuracy(model, train, pd.DataFrame(unlabelled), size=56, device=torch.device("cpu"))


def test_dense_monitor_dice_equals_segment_linear_head(tmp_path, bundled_manifests):
    """The monitor's dense_dice is `dermino segment`'s linear head (linear_fit: ridge) on the same
    data and settings: fitted on the train split, scored on the test split."""
    from dermino.evaluate.dense import dense_dice
    from dermino.pretrain.monitor import dense_monitor_pairs
    from dermino.segment import SegmentConfig, evaluate_segmentation, train_segmentation
    from dermino.segment.heads import build_segmentation_model

    ph2 = bundled_manifests["ph2"]
    tiny = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 56}
    cfg = SegmentConfig(manifest=str(ph2), backbone="dermino_vit_tiny_14", backbone_overrides=tiny,
                        out=str(tmp_path / "seg"), img_size=[56], linear_fit="ridge", val_split="",
                        bootstrap=10, progress=False, device="cpu", seed=0)
    torch.manual_seed(3)
    model = build_segmentation_model(cfg)
    fit, score = dense_monitor_pairs(str(ph2), max_images=0)  # 0: all, as segment's max_train=0
    monitor_dice = dense_dice(model.backbone, fit, score, (56, 56))
    assert len(fit) == 27 and len(score) == 30
    run = train_segmentation(cfg, model=model)
    result = evaluate_segmentation(run, write_predictions=False, n_bootstrap=10)
    assert result.extra["n_images"] == len(score)
    assert monitor_dice == pytest.approx(result.metrics["dice"].value, abs=1e-9)
    assert 0.0 < monitor_dice < 1.0


@pytest.mark.parametrize(("metric", "scores", "below"), [
    ("knn_accuracy", [0.60, 0.58, 0.50, 0.49], [0, 0, 1, 2]),
    ("knn_macro_auroc", [0.80, 0.81, 0.70, 0.69], [0, 0, 1, 2]),
    ("rankme", [40.0, 39.95, 39.8, 39.7], [0, 0, 1, 2]),
    ("dense_dice", [0.70, 0.66, 0.64, 0.60], [0, 0, 1, 2]),
    # a distance from the start: rising is worse, falling never is
    ("gram_distance", [0.0, 0.04, 0.06, 0.09], [0, 0, 1, 2]),
])
def test_guard_stops_on_each_metric_in_its_direction(metric, scores, below):
    from dermino.pretrain.collapse import CollapseGuard, collapse_message

    margin = 0.1 if metric == "rankme" else 0.05
    guard = CollapseGuard(metric, margin=margin, patience=2)
    others = {"knn_accuracy": 0.5, "knn_macro_auroc": 0.5, "rankme": 10.0, "dense_dice": 0.5, "gram_distance": 0.0}
    verdicts = [guard.update(10 * i, {**others, metric: v}) for i, v in enumerate(scores)]
    assert [v.below for v in verdicts] == below and verdicts[-1].stop and not verdicts[-2].stop
    assert guard.last_good_step == 10
    side = "above" if metric == "gram_distance" else "below"
    assert f"more than {margin} {side} its start" in collapse_message(guard, verdicts[-1], None, [], Path("run"))


def test_guard_on_gram_distance_ignores_a_fall():
    from dermino.pretrain.collapse import CollapseGuard

    guard = CollapseGuard("gram_distance", margin=0.05, patience=1)
    guard.update(0, {"gram_distance": 0.5})  # a start with a non-zero distance (a resumed baseline)
    assert guard.update(10, {"gram_distance": 0.1}).below == 0
    assert guard.update(20, {"gram_distance": 0.6}).stop


def test_guard_replays_the_new_columns():
    from dermino.pretrain.collapse import CollapseGuard

    guard = CollapseGuard("dense_dice", margin=0.05, patience=3)
    rows = []
    for step, dice in ((0, 0.7), (10, 0.6), (20, 0.55)):
        scores = {"knn_accuracy": 0.5, "knn_macro_auroc": 0.5, "rankme": 5.0, "dense_dice": dice, "gram_distance": 0.1}
        rows.append(guard.row(step, scores, guard.update(step, scores)))
    again = CollapseGuard("dense_dice", margin=0.05, patience=3)
    again.replay(rows)
    assert again.below == 2 and again.start["dense_dice"] == 0.7 and again.update(30, {"dense_dice": 0.5}).stop


def test_config_needs_masks_for_dense_dice_and_gram_images_for_gram_distance(tmp_path):
    from dermino.config import check_config
    from dermino.pretrain.config import tiny_config

    cfg = tiny_config(str(tmp_path), collapse_metric="dense_dice")
    with pytest.raises(ValueError, match="data.monitor_masks"):
        check_config(cfg)
    cfg.data.monitor_masks = "masks.csv"
    check_config(cfg)
    cfg = tiny_config(str(tmp_path), collapse_metric="gram_distance")
    cfg.data.monitor_gram_images = 0
    with pytest.raises(ValueError, match="monitor_gram_images"):
        check_config(cfg)
