"""The fast step (fused AdamW, SDPA, device-side skip checks) against the reference step."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

from dermino.pretrain.config import tiny_config
from dermino.pretrain.fast_step import FastStep, TrainStep, fast_path_blocker, use_sdpa
from dermino.pretrain.model import TERMS
from dermino.pretrain.trainer import Trainer

#: Tolerances (fp32, CPU). On one fixed batch the reference path (explicit attention, for-loop
#: AdamW, values read every step) and the fast path differ by float rounding only: losses to 1e-6
#: relative, gradient norms to 1e-4, parameters after a step of lr 1e-4 to 1e-5 (a tenth of one
#: update: a few weights whose gradient is near Adam's eps move by ~lr * g / (|g| + eps), which
#: rounding shifts by a few 1e-6; every other weight agrees to 1e-7). Over several steps that
#: rounding (here also the EMA: one fused lerp against a multiply and an add) is amplified by
#: Adam's first updates (~lr * sign(g)) and the sharp teacher targets to ~1e-3 of this tiny
#: model's total loss (and ~1e-2 of single terms such as KoLeo over 4 images), so after the first
#: step the multi-step checks compare the total loss to 2e-3.
LOSS_RTOL, PARAM_ATOL = 1e-6, 1e-6
MULTI_STEP_RTOL = 2e-3


def _trainer(tmp_path, name: str, **overrides) -> Trainer:
    cfg = tiny_config(str(tmp_path / name))
    cfg.optim.clip_grad = 0.5  # small enough that clipping is active
    for key, value in overrides.items():
        section, field = key.split(".")
        setattr(getattr(cfg, section), field, value)
    return Trainer(cfg)


def _reference(trainer: Trainer) -> Trainer:
    """The plain path: explicit attention, for-loop AdamW, ``train_step`` (reads values every step)."""
    for m in trainer.model.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = False
    groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in trainer.optimizer.param_groups]
    trainer.optimizer = torch.optim.AdamW(groups, lr=0.0, betas=(0.9, 0.999), foreach=False, fused=False)
    return trainer


@pytest.fixture(scope="module")
def batches(tmp_path_factory):
    t = _trainer(tmp_path_factory.mktemp("data"), "data")
    stream = t.batches()
    return [next(stream) for _ in range(3)]


def _run_fast(trainer: Trainer, batches) -> list[dict]:
    fast = FastStep(trainer)
    torch.manual_seed(123)
    return [fast.read(fast([b])) for b in batches]


def _run_reference(trainer: Trainer, batches) -> list[dict]:
    torch.manual_seed(123)
    return [trainer.train_step([b]) for b in batches]


def _assert_same(rows_a, rows_b, model_a, model_b, param_atol=PARAM_ATOL):
    for a, b in zip(rows_a, rows_b, strict=True):
        for k in ("loss", *TERMS):
            assert a[k] == pytest.approx(b[k], rel=LOSS_RTOL, abs=1e-7), k
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-4)
        assert a["skipped"] == b["skipped"] == 0
    for (name, p), q in zip(model_a.state_dict().items(), model_b.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, atol=param_atol, rtol=1e-4, msg=name)


def _assert_close_trajectory(rows_a, rows_b):
    """Several steps: the first exactly as above, later total losses within MULTI_STEP_RTOL."""
    assert rows_a[0]["loss"] == pytest.approx(rows_b[0]["loss"], rel=LOSS_RTOL)
    for a, b in zip(rows_a, rows_b, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=MULTI_STEP_RTOL)
        assert a["skipped"] == b["skipped"] == 0


def test_fast_and_reference_paths_agree_on_a_fixed_batch(tmp_path, batches):
    ref, fast = _reference(_trainer(tmp_path, "ref")), _trainer(tmp_path, "fast")
    assert fast.optimizer.param_groups[0]["fused"] is True
    for t in (ref, fast):
        t.lr = [1e-4] * t.total_steps  # a real update on the first step (the schedule warms up from 0)
    _assert_same(_run_reference(ref, batches[:1]), _run_fast(fast, batches[:1]), ref.model, fast.model, 1e-5)
    moved = [(p - q).abs().max() for p, q in zip(fast.model.student.parameters(),
                                                  _trainer(tmp_path, "init").model.student.parameters(), strict=True)]
    assert max(moved) > 5e-5  # the step did move the weights that were compared


def test_fast_step_matches_train_step_over_several_steps(tmp_path, batches):
    ref, fast = _trainer(tmp_path, "ref"), _trainer(tmp_path, "fast")
    _assert_close_trajectory(_run_reference(ref, batches), _run_fast(fast, batches))
    assert ref.step == fast.step == 3


def test_activation_checkpointing_and_centering_keep_the_values(tmp_path, batches):
    plain = _trainer(tmp_path, "plain", **{"losses.dino": _centering(tmp_path)})
    ckpt = _trainer(tmp_path, "ckpt", **{"run.activation_checkpointing": True, "losses.dino": _centering(tmp_path)})
    assert ckpt.model.student.backbone.vit.grad_checkpointing
    _assert_close_trajectory(_run_reference(plain, batches[:2]), _run_fast(ckpt, batches[:2]))
    assert ckpt.model.dino_center.center.abs().sum() > 0


def test_head_warmup_runs_on_the_fast_step_and_logs_teacher_statistics(tmp_path, batches):
    ref = _trainer(tmp_path, "ref", **{"schedule.head_warmup_images": 8})  # 2 steps of 4 images
    fast = _trainer(tmp_path, "fast", **{"schedule.head_warmup_images": 8})
    assert fast.warmup.steps == 2 and fast_path_blocker(fast) is None
    frozen = {k: v.clone() for k, v in fast.model.state_dict().items() if ".backbone." in f".{k}"}
    stepper = TrainStep(fast)
    assert stepper.sync_free
    torch.manual_seed(123)
    rows = [stepper.read(stepper([b])) for b in batches[:2]]
    after = fast.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in frozen.items())  # student and teacher backbones
    assert not any(fast.optimizer.state.get(p) for p in fast.warmup.params)
    ref_rows = _run_reference(ref, batches[:2])
    for a, b in zip(rows, ref_rows, strict=True):
        assert a["head_warmup"] == b["head_warmup"] == 1
        for k in ("loss", "teacher_entropy", "prototypes_used"):
            assert a[k] == pytest.approx(b[k], rel=MULTI_STEP_RTOL), k
        assert 0 < a["teacher_entropy"] <= math.log(fast.cfg.model.heads.out_dim) + 1e-4
    row = stepper.read(stepper([batches[2]]))  # the normal schedules from here: the backbone moves
    assert row["head_warmup"] == 0


def test_fit_runs_the_reference_policy_when_fast_step_is_off(tmp_path):
    t = _trainer(tmp_path, "slow", **{"run.fast_step": False})
    assert not t._stepper().sync_free
    t.fit()
    import pandas as pd

    metrics = pd.read_csv(tmp_path / "slow" / "metrics.csv")
    assert metrics["step"].tolist() == [1, 2, 3, 4] and metrics["teacher_entropy"].notna().all()


def _centering(tmp_path):
    cfg = copy.deepcopy(tiny_config(str(tmp_path)).losses.dino)
    cfg.normalisation = "centering"
    return cfg


def test_non_finite_step_is_skipped_on_the_device(tmp_path, batches):
    t = _trainer(tmp_path, "nan", **{"losses.dino": _centering(tmp_path)})
    fast = FastStep(t)
    fast([batches[0]])
    before = copy.deepcopy(t.model.state_dict())
    opt_step = t.optimizer.state[t.params[0]]["step"].clone()
    bad = dict(batches[1])
    bad["global_crops"] = batches[1]["global_crops"].clone()
    bad["global_crops"][0, 0, 0, 0] = float("nan")
    rows = [fast([bad]), fast([bad])]
    for name, value in t.model.state_dict().items():  # student, teacher and centres all unchanged
        assert torch.equal(value, before[name]), name
    assert torch.equal(t.optimizer.state[t.params[0]]["step"], opt_step)
    row = fast.read(rows[-1])
    assert row["skipped"] == 2 and t.bad_steps == 2 and t.step == 3
    fast.read(fast([batches[2]]))
    assert t.bad_steps == 0  # a good step resets the run of bad ones


def test_attention_goes_through_sdpa(tmp_path, batches, monkeypatch):
    t = _trainer(tmp_path, "sdpa")
    assert use_sdpa(t.model) == 2 * 2  # student + teacher, 2 blocks each
    calls = []
    real = F.scaled_dot_product_attention

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counting)
    FastStep(t)([batches[0]])
    assert len(calls) >= 2 * 3  # student global + local, teacher global, per block


def test_fit_uses_the_fast_step_and_reads_every_log_interval(tmp_path):
    t = _trainer(tmp_path, "fit", **{"run.log_every": 2, "run.checkpoint_every": 4})
    t.fit()
    import pandas as pd

    metrics = pd.read_csv(tmp_path / "fit" / "metrics.csv")
    assert metrics["step"].tolist() == [2, 4] and (metrics["loss"] > 0).all()
    assert metrics["teacher_entropy"].notna().all() and (metrics["prototypes_used"] >= 1).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host-device syncs exist only with a GPU")
def test_no_host_device_sync_inside_the_fast_step(tmp_path, batches):
    t = _trainer(tmp_path, "cuda", **{"run.device": "cuda", "data.num_workers": 0})
    fast = FastStep(t)
    pinned = [{k: v.pin_memory() if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
    fast.read(fast([pinned[0]]))  # first call: lazy state (optimizer moments) may sync
    torch.cuda.set_sync_debug_mode("error")
    try:
        row = fast([pinned[1]])
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert fast.read(row)["skipped"] == 0
