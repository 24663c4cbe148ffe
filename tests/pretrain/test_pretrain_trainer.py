"""Trainer on real bundled images: NaN guard, a full tiny run with its outputs, loss going down."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from dermino.pretrain.config import tiny_config
from dermino.pretrain.trainer import BadStepsError, Trainer, load_pretrain_manifest, pretrain


def test_nan_guard_skips_poisoned_steps_and_stops_after_k(tmp_path, manifests):
    cfg = tiny_config(str(tmp_path / "run"), max_bad_steps=2)
    cfg.data.manifests = manifests
    trainer = Trainer(cfg)
    stream = trainer.batches()
    good = next(stream)
    poisoned = dict(good, global_crops=good["global_crops"].clone())
    poisoned["global_crops"][0, 0, 0, 0] = float("nan")
    before_s = [p.detach().clone() for p in trainer.model.student.parameters()]
    before_t = [p.detach().clone() for p in trainer.model.teacher.parameters()]
    row = trainer.train_step([poisoned])
    assert row["skipped"] == 1 and trainer.bad_steps == 1 and trainer.step == 1
    assert all(torch.equal(a, b) for a, b in zip(before_s, trainer.model.student.parameters(), strict=True))
    assert all(torch.equal(a, b) for a, b in zip(before_t, trainer.model.teacher.parameters(), strict=True))
    assert all(p.grad is None for p in trainer.model.student.parameters())
    row = trainer.train_step([good])  # a good step trains and resets the counter
    assert row["skipped"] == 0 and trainer.bad_steps == 0
    assert not all(torch.equal(a, b) for a, b in zip(before_s, trainer.model.student.parameters(), strict=True))
    trainer.train_step([poisoned])
    with pytest.raises(BadStepsError, match="2 consecutive"):
        trainer.train_step([poisoned])


def test_tiny_run_writes_outputs_and_export(tmp_path, manifests):
    cfg = tiny_config(str(tmp_path / "run"), monitor_every=2)
    cfg.data.manifests = manifests
    ph2 = next(m for m in manifests if m.endswith("ph2.csv"))  # 60 images: a quick monitor
    cfg.data.monitor_train = cfg.data.monitor_val = ph2
    cfg.data.monitor_size = 56
    cfg.data.monitor_masks, cfg.data.monitor_masks_max = ph2, 8  # the dense probe on PH2 lesion masks
    cfg.data.monitor_gram_images = 2  # of the 3 PH2 val images (the kNN queries)
    out = pretrain(cfg)
    monitor = pd.read_csv(out / "monitor.csv")
    assert monitor["step"].tolist() == [2, 4] and monitor["knn_accuracy"].between(0, 1).all()
    assert monitor["rankme"].between(1, 64).all()  # effective rank of 64-d embeddings
    assert monitor["dense_dice"].between(0, 1).all()
    assert (monitor["gram_distance"] > 0).all()  # the teacher moved from the start's weights
    assert torch.load(out / "monitor_gram_start.pt", weights_only=True).shape == (2, 16, 16)
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["step"].tolist() == [1, 2, 3, 4]
    assert metrics["loss"].notna().all() and (metrics["images_per_s"] > 0).all() and (metrics["mfu"] > 0).all()
    assert (out / "config.yaml").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000002.pt", "step_00000004.pt"]
    meta = json.loads((out / "export" / "teacher_backbone.json").read_text())
    assert meta["spec"]["depth"] == 2
    sd = torch.load(out / "export" / "teacher_backbone.pt")
    state = torch.load(out / "checkpoints" / "step_00000004.pt", weights_only=False)["model"]
    assert torch.equal(sd["vit.pos_embed"], state["teacher.backbone.vit.pos_embed"])
    from dermino.models.weights import load_exported

    model = load_exported(out / "export" / "teacher")
    assert torch.equal(model.vit.pos_embed, sd["vit.pos_embed"])
    with pytest.raises(ValueError, match="--resume"):
        pretrain(cfg)  # refuses to overwrite a run


def test_manifest_splits_filter(tmp_path, manifests):
    cfg = tiny_config(str(tmp_path))
    cfg.data.manifests = manifests
    cfg.data.splits = ["test"]
    df = load_pretrain_manifest(cfg, tmp_path)
    assert set(df["split"]) == {"test"}
    assert all(str(p).startswith("/") for p in df["image"])


def test_short_real_run_loss_falls(tmp_path, manifests):
    """~40 steps on real images: the training loss goes down (koleo, knowledge and DINO terms)."""
    cfg = tiny_config(str(tmp_path / "run"), checkpoint_every=1000)
    cfg.data.manifests = manifests
    cfg.schedule.batch_size = 8
    cfg.schedule.budget_steps = 40
    cfg.optim.base_lr = 5e-3
    cfg.optim.warmup_epochs = 0.1
    out = pretrain(cfg)
    loss = pd.read_csv(out / "metrics.csv")["loss"].to_numpy()
    assert loss[-8:].mean() < loss[:8].mean() - 0.1, loss


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_amp_and_accumulation_run(tmp_path, manifests, precision):
    cfg = tiny_config(str(tmp_path / "run"), precision=precision, checkpoint_every=1000)
    cfg.data.manifests = manifests
    cfg.schedule.grad_accum = 2
    cfg.schedule.budget_steps = 2
    trainer = Trainer(cfg)
    assert trainer.global_batch == 8 and trainer.scaler.is_enabled() == (precision == "fp16")
    trainer.fit()
    assert trainer.step == 2 and trainer.data_state == (0, 16)  # 2 steps x 2 micro-batches x 4 images
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics["loss"].notna().all()


def test_last_layer_frozen_during_first_epoch(tmp_path, manifests):
    cfg = tiny_config(str(tmp_path / "run"))
    cfg.data.manifests = manifests
    cfg.optim.freeze_last_layer_epochs = 1
    trainer = Trainer(cfg)
    assert trainer.freeze_last_layer_steps == trainer.steps_per_epoch > 1
    head = trainer.model.student.dino_head
    last = head.last_layer.weight_v.detach().clone()
    first_mlp = head.mlp[0].weight.detach().clone()
    trainer.lr[:] = 1e-3  # a visible lr from step 0 (warm-up starts at 0)
    trainer.train_step([next(trainer.batches())])
    assert torch.equal(head.last_layer.weight_v, last)
    assert not torch.equal(head.mlp[0].weight, first_mlp)


def test_bad_config_fails_before_loading_anything(tmp_path):
    cfg = tiny_config(str(tmp_path / "run"), precision="fp8")
    cfg.data.manifests = [str(tmp_path / "does_not_exist.csv")]  # never read: validation comes first
    cfg.crops.local_size = 30
    with pytest.raises(ValueError, match="fp8") as err:
        Trainer(cfg)
    assert "local_size=30" in str(err.value)
