"""Continued pretraining from DINOv2-format weights: exact loading at another resolution, the head
warm-up (backbone bit-identical, schedules after it), teacher statistics, and the collapse guard."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from dermino.models import create, export_dinov2, load_exported
from dermino.pretrain.checkpoint import latest_checkpoint
from dermino.pretrain.collapse import CollapseError, CollapseGuard, keep_good, set_aside, teacher_statistics
from dermino.pretrain.config import tiny_config
from dermino.pretrain.schedules import cosine_schedule, warmup_then_constant
from dermino.pretrain.trainer import Trainer, pretrain
from dermino.pretrain.warmup import HEAD_WARMUP_FRACTION, head_warmup_steps

TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2}


@pytest.fixture(scope="module")
def dinov2_file(tmp_path_factory, manifests_by_name):
    """A tiny ViT pretrained on the bundled images, saved in the DINOv2 hub format at its 56 px grid."""
    out = tmp_path_factory.mktemp("source")
    cfg = tiny_config(str(out / "run"))
    cfg.data.manifests = list(manifests_by_name.values())
    cfg.schedule.budget_steps = 2
    cfg.model.layerscale_init = 1.0  # 1e-5 would leave the CLS token nearly the same for every image
    run = pretrain(cfg)
    source = load_exported(run / "export" / "teacher").eval()
    return source, export_dinov2(source, out / "dinov2_vitt14_pretrain.pth")


def _continued_cfg(out, manifests, weights, **schedule):
    cfg = tiny_config(str(out))
    cfg.data.manifests = list(manifests.values())
    cfg.model.init_weights = str(weights)
    cfg.crops.global_size = 70  # 5 x 5 grid: the 4 x 4 position embeddings are interpolated
    for k, v in schedule.items():
        setattr(cfg.schedule, k, v)
    return cfg


def test_dinov2_file_has_hub_keys_and_reloads_exactly(dinov2_file):
    source, path = dinov2_file
    sd = torch.load(path, weights_only=True)
    assert {"cls_token", "pos_embed", "mask_token", "norm.weight", "patch_embed.proj.weight"} <= set(sd)
    assert "blocks.1.attn.qkv.weight" in sd and "blocks.0.ls1.gamma" in sd
    assert sd["pos_embed"].shape == (1, 1 + 4 * 4, 64)  # the model's own grid, class-token slot included
    loaded = create("dermino_vit_tiny_14", weights=str(path), **TINY).eval()
    x = torch.randn(2, 3, 56, 56)
    with torch.no_grad():
        assert torch.allclose(loaded(x), source(x), atol=1e-5)


@pytest.mark.parametrize("registers", [0, 4])
def test_dinov2_registers_export_roundtrip(tmp_path, registers):
    torch.manual_seed(registers)
    src = create("dermino_vit_tiny_14", **TINY, img_size=42, num_register_tokens=registers,
                 layerscale_init=0.1).eval()
    path = export_dinov2(src, tmp_path / "w.pth")
    sd = torch.load(path, weights_only=True)
    assert ("register_tokens" in sd) == bool(registers) and sd["pos_embed"].shape[1] == 1 + 9
    dst = create("dermino_vit_tiny_14", weights=str(path), **TINY, num_register_tokens=registers).eval()
    x = torch.randn(2, 3, 70, 56)
    with torch.no_grad():
        assert torch.allclose(dst(x), src(x), atol=1e-5)


def test_continued_run_starts_from_the_saved_features_and_warmup_freezes_the_backbone(tmp_path, manifests_by_name, dinov2_file):
    source, path = dinov2_file
    cfg = _continued_cfg(tmp_path / "run", manifests_by_name, path, head_warmup_images=8, budget_steps=5)
    trainer = Trainer(cfg)
    student, teacher = trainer.model.student.backbone, trainer.model.teacher.backbone
    assert student.vit.pos_embed.shape[1] == 1 + 5 * 5  # resampled to the 70 px training grid
    x = torch.randn(3, 3, 70, 70)
    with torch.no_grad():
        expected = source(x)  # the source interpolates its 4 x 4 embeddings on the fly
        assert torch.allclose(student.eval()(x), expected, atol=1e-5)
        assert torch.allclose(teacher(x), expected, atol=1e-5)

    # 8 images / batch 4 = 2 warm-up steps; the normal schedules start after them
    assert trainer.warmup.steps == 2
    n = trainer.total_steps - 2
    assert trainer.lr[2] == 0.0 and trainer.lr[1] > 0  # head lr during warm-up; normal lr warm-up from 0 after
    np.testing.assert_array_equal(trainer.teacher_temp[2:], warmup_then_constant(
        cfg.losses.dino.warmup_teacher_temp, cfg.losses.dino.teacher_temp, n,
        int(cfg.losses.dino.warmup_teacher_temp_epochs * trainer.steps_per_epoch)))
    np.testing.assert_array_equal(trainer.wd[2:], cosine_schedule(cfg.optim.weight_decay, cfg.optim.weight_decay_end, n))

    frozen_s = {k: v.clone() for k, v in student.state_dict().items()}
    frozen_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    heads = {k: v.clone() for k, v in trainer.model.student.dino_head.state_dict().items()}
    t_heads = {k: v.clone() for k, v in trainer.model.teacher.dino_head.state_dict().items()}
    stream = trainer.batches()
    for _ in range(2):
        row = trainer.train_step([next(stream)])
        assert row["head_warmup"] == 1 and row["skipped"] == 0
        assert 0 < row["teacher_entropy"] <= math.log(cfg.model.heads.out_dim) + 1e-4
        assert 1 <= row["prototypes_used"] <= cfg.model.heads.out_dim
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in frozen_s.items())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in frozen_t.items())
    assert not any(trainer.optimizer.state.get(p) for p in trainer.warmup.params)  # AdamW never saw them
    changed = lambda before, module: any(not torch.equal(v, module.state_dict()[k]) for k, v in before.items())  # noqa: E731
    assert changed(heads, trainer.model.student.dino_head) and changed(t_heads, trainer.model.teacher.dino_head)
    trainer.train_step([next(stream)])  # step 2: lr is 0 (the normal warm-up's first value)
    row = trainer.train_step([next(stream)])
    assert row["head_warmup"] == 0
    assert changed(frozen_s, student) and changed(frozen_t, teacher)


def test_head_warmup_defaults():
    assert head_warmup_steps(None, None, 16, 100) == 0  # from scratch: no warm-up
    assert head_warmup_steps(None, "w.pth", 16, 100) == math.ceil(HEAD_WARMUP_FRACTION * 100)
    assert head_warmup_steps(0, "w.pth", 16, 100) == 0
    assert head_warmup_steps(None, "w.pth", 16, 100, epoch_images=64) == 4  # at most one epoch
    assert head_warmup_steps(33, None, 16, 100) == 3
    with pytest.raises(ValueError, match="whole budget"):
        head_warmup_steps(1600, "w.pth", 16, 100)


def test_teacher_statistics_golden_values():
    k = 8
    uniform = teacher_statistics(torch.zeros(5, k), 0.1)
    assert uniform["teacher_entropy"] == pytest.approx(math.log(k)) and uniform["prototypes_used"] == pytest.approx(k)
    same = torch.full((6, k), -50.0)
    same[:, 3] = 50.0  # every image sure of prototype 3: collapsed
    s = teacher_statistics(same, 1.0)
    assert s["teacher_entropy"] == pytest.approx(0.0, abs=1e-6) and s["prototypes_used"] == pytest.approx(1.0)
    spread = torch.full((k, k), -50.0).fill_diagonal_(50.0)  # sharp and each on its own prototype
    s = teacher_statistics(spread, 1.0)
    assert s["teacher_entropy"] == pytest.approx(0.0, abs=1e-6) and s["prototypes_used"] == pytest.approx(k)
    two = teacher_statistics(torch.tensor([[0.0, math.log(3.0)]]), 1.0)  # p = (1/4, 3/4)
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert two["teacher_entropy"] == pytest.approx(h) and two["prototypes_used"] == pytest.approx(math.exp(h))


def test_guard_counts_evaluations_in_a_row_and_replays():
    g = CollapseGuard("knn_macro_auroc", margin=0.05, patience=2)
    seq = [(0, 0.80), (10, 0.78), (20, 0.74), (30, 0.77), (40, 0.70), (50, 0.69)]
    verdicts = [g.update(step, {"knn_macro_auroc": v, "knn_accuracy": 0.5}) for step, v in seq]
    assert [v.below for v in verdicts] == [0, 0, 1, 0, 1, 2]
    assert [v.stop for v in verdicts] == [False] * 5 + [True]
    assert verdicts[1].good and not verdicts[2].good and g.last_good_step == 30
    assert verdicts[4].change == pytest.approx(-0.10)
    rows = [g.row(s, {"knn_macro_auroc": v, "knn_accuracy": 0.5}, vd) for (s, v), vd in zip(seq[:5], verdicts, strict=False)]
    again = CollapseGuard("knn_macro_auroc", margin=0.05, patience=2)
    again.replay(rows)  # a resumed run continues the count
    assert again.below == 1 and again.last_good_step == 30 and again.update(50, {"knn_macro_auroc": 0.69}).stop
    # without a start (no step-0 evaluation) there is nothing to compare with
    assert not CollapseGuard("knn_macro_auroc", 0.05, 1).update(10, {"knn_macro_auroc": 0.1}).stop


def test_good_checkpoint_survives_pruning_and_is_put_back(tmp_path):
    d = tmp_path / "checkpoints"
    d.mkdir()
    (d / "step_00000010.pt").write_bytes(b"good")
    keep_good(d, 10)
    for s in (20, 30):
        (d / f"step_{s:08d}.pt").write_bytes(b"bad")
    (d / "step_00000010.pt").unlink()  # pruned by save_checkpoint(keep=2)
    resume, moved = set_aside(d, 10)
    assert resume == d / "step_00000010.pt" and resume.read_bytes() == b"good"
    assert sorted(p.name for p in moved) == ["step_00000020.pt", "step_00000030.pt"]
    assert latest_checkpoint(d) == resume and (d / "collapsed" / "step_00000030.pt").is_file()


def test_guard_stops_a_run_forced_to_collapse(tmp_path, manifests_by_name, dinov2_file):
    """No warm-up and a huge learning rate: the kNN score falls below the start, the run stops
    and names the last good checkpoint, which --resume then picks."""
    _, path = dinov2_file
    cfg = _continued_cfg(tmp_path / "run", manifests_by_name, path, head_warmup_images=0, budget_steps=8)
    cfg.crops.global_size = 56
    cfg.data.epoch_size = 8  # 2 steps an "epoch": lr warm-up 0 -> peak over steps 0-1
    cfg.optim.warmup_epochs = 1
    cfg.optim.base_lr = 600.0  # 300 no longer fell below the margin twice in a row on this machine
    cfg.optim.clip_grad = 0.0
    cfg.optim.momentum_teacher = cfg.optim.momentum_teacher_end = 0.0  # the teacher is the student
    ham = pd.read_csv(manifests_by_name["ham10000"])  # bank: the train lesions; queries: the test lesions
    ham["split"] = ham["split"].replace({"val": "none", "test": "val"})
    ham["image"] = [str((Path(manifests_by_name["ham10000"]).parent / p).resolve()) for p in ham["image"]]
    ham.to_csv(tmp_path / "monitor.csv", index=False)
    cfg.data.monitor_train = cfg.data.monitor_val = str(tmp_path / "monitor.csv")
    cfg.data.monitor_size = 56
    cfg.run.monitor_every = 1
    cfg.run.checkpoint_every = 100
    cfg.run.collapse_margin = 0.02
    cfg.run.collapse_patience = 2
    with pytest.raises(CollapseError, match="Last good checkpoint") as err:
        pretrain(cfg)
    monitor = pd.read_csv(tmp_path / "run" / "monitor.csv")
    assert monitor["step"].iloc[0] == 0 and monitor["knn_macro_auroc_change"].iloc[0] == 0
    assert list(monitor["below_start"].iloc[-2:]) == [1, 2]
    good = int(monitor[monitor["below_start"] == 0]["step"].iloc[-1])
    named = tmp_path / "run" / "checkpoints" / f"step_{good:08d}.pt"
    assert str(named) in str(err.value)
    assert latest_checkpoint(tmp_path / "run" / "checkpoints") == named
    assert (tmp_path / "run" / "checkpoints" / "good" / named.name).is_file()
    assert not (tmp_path / "run" / "export").exists()


def test_config_rejects_bad_warmup_and_guard_values(tmp_path):
    cfg = tiny_config(str(tmp_path))
    cfg.schedule.head_warmup_images = -1
    cfg.run.collapse_metric = "loss"
    cfg.run.collapse_patience = -2
    with pytest.raises(ValueError) as err:
        Trainer(cfg)
    for key in ("schedule.head_warmup_images", "run.collapse_metric", "run.collapse_patience"):
        assert key in str(err.value)
