"""Two CPU processes (gloo DDP) on halves of a batch give the loss and gradients of one process
on the whole batch: Sinkhorn statistics are all-reduced and every term is a per-image mean.
FSDP (sharded student, teacher and optimizer) trains like DDP and resumes exactly."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from _net import free_port
from dermino.config import save_config
from dermino.data.masking import MaskingConfig, batch_masks
from dermino.pretrain.config import tiny_config
from dermino.pretrain.distributed import DistInfo, shard_branches, wrap_model
from dermino.pretrain.model import StudentTeacher

B, N_LOCAL, C = 4, 2, 3


def full_batch() -> dict:
    g = torch.Generator().manual_seed(0)
    targets = torch.zeros(B, C)
    targets[torch.arange(B), torch.arange(B) % C] = 1
    return {
        "global_crops": torch.randn(2 * B, 3, 56, 56, generator=g),
        "local_crops": torch.randn(N_LOCAL * B, 3, 28, 28, generator=g),
        "masks": batch_masks(2 * B, (4, 4), MaskingConfig(probability=1.0), np.random.default_rng(0)),
        "targets": targets,
        "label_mask": torch.ones(B, C),
        "n_global": 2,
        "n_local": N_LOCAL,
    }


def shard(batch: dict, rank: int, world: int) -> dict:
    """This rank's images, keeping the view-major layout."""
    b = B // world
    sel = slice(rank * b, (rank + 1) * b)

    def views(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([v[sel] for v in t.chunk(t.shape[0] // B)])

    out = dict(batch)
    for k in ("global_crops", "local_crops", "masks"):
        out[k] = views(batch[k])
    out["targets"], out["label_mask"] = batch["targets"][sel], batch["label_mask"][sel]
    return out


def build() -> StudentTeacher:
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.model.drop_path_rate = 0.0
    cfg.losses.koleo.enabled = False  # nearest neighbours are per rank by design (as in DINOv2)
    protos = torch.nn.functional.normalize(torch.randn(C, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    return StudentTeacher(cfg.model, cfg.losses, 56, protos)


def loss_and_grads(model: StudentTeacher, batch: dict, student=None) -> tuple[torch.Tensor, dict]:
    out = model.compute_loss(batch, teacher_temp=0.05, student=student)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.student.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


def _worker(rank: int, world: int, port: int, result_path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model = build()
        ddp = wrap_model(model.student, DistInfo(rank=rank, world_size=world))
        loss, grads = loss_and_grads(model, shard(full_batch(), rank, world), student=ddp)
        dist.all_reduce(loss)
        if rank == 0:
            torch.save({"loss": loss / world, "grads": grads}, result_path)
    finally:
        dist.destroy_process_group()


def test_two_process_ddp_matches_single_process(tmp_path):
    result = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, free_port(), str(result)), nprocs=2, join=True)
    ddp = torch.load(result)
    loss, grads = loss_and_grads(build(), full_batch())
    torch.testing.assert_close(ddp["loss"], loss, rtol=1e-5, atol=1e-6)
    assert grads.keys() == ddp["grads"].keys() and len(grads) > 10
    for name, g in grads.items():
        torch.testing.assert_close(ddp["grads"][name], g, rtol=1e-3, atol=1e-6, msg=name)


def _torchrun(config, *extra) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "dermino.cli",
           "pretrain", "--config", str(config), *extra]
    res = subprocess.run(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1"),
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]


@pytest.mark.slow
def test_torchrun_two_process_training_and_exact_resume(tmp_path):
    """The whole trainer under torchrun (gloo): runs, checkpoints, exports; resuming from the
    step-2 checkpoint re-creates the step-4 weights exactly (per-rank RNG states restored)."""
    cfg = tiny_config(str(tmp_path / "run"))
    cfg.schedule.budget_steps = 4
    cfg.run.keep_checkpoints = 5
    save_config(cfg, tmp_path / "tiny.yaml")
    _torchrun(tmp_path / "tiny.yaml")
    ckpts = tmp_path / "run" / "checkpoints"
    first = torch.load(ckpts / "step_00000004.pt", weights_only=False)
    assert first["world_size"] == 2 and first["data_state"] == (0, 16) and len(first["rng"]) == 2
    assert (tmp_path / "run" / "export" / "teacher_backbone.pt").is_file()
    (ckpts / "step_00000004.pt").unlink()
    _torchrun(tmp_path / "tiny.yaml", "--resume")
    again = torch.load(ckpts / "step_00000004.pt", weights_only=False)
    for k, v in first["model"].items():
        assert torch.equal(v, again["model"][k]), k


def test_fsdp_needs_several_processes():
    with pytest.raises(ValueError, match="torchrun"):
        shard_branches([build().student], DistInfo())


@pytest.mark.slow
def test_torchrun_fsdp_trains_like_ddp_and_resumes_exactly(tmp_path):
    """run.fsdp=true: the same 4 steps as DDP give the same losses and (to Adam's rounding) the
    same weights; the kNN monitor runs on the gathered teacher; the checkpoint holds whole tensors
    under the usual names, the exported teacher is the checkpoint's teacher, and resuming from
    step 2 re-creates step 4 bit for bit."""
    from dermino.data.sample import sample_manifests

    ph2 = sample_manifests(tmp_path / "manifests")["ph2"]  # for the kNN monitor (gathers under FSDP)
    runs = {}
    for name, fsdp in (("ddp", False), ("fsdp", True)):
        cfg = tiny_config(str(tmp_path / name))
        cfg.schedule.budget_steps = 4
        cfg.run.keep_checkpoints = 5
        cfg.run.fsdp = fsdp
        cfg.data.monitor_train = cfg.data.monitor_val = str(ph2)
        cfg.data.monitor_size = 28
        cfg.run.monitor_every = 2
        save_config(cfg, tmp_path / f"{name}.yaml")
        _torchrun(tmp_path / f"{name}.yaml")
        runs[name] = torch.load(tmp_path / name / "checkpoints" / "step_00000004.pt", weights_only=False)
    ddp, fsdp = runs["ddp"]["model"], runs["fsdp"]["model"]
    assert ddp.keys() == fsdp.keys()
    for k, v in ddp.items():
        assert fsdp[k].shape == v.shape, k  # whole tensors, not this rank's shard
        torch.testing.assert_close(fsdp[k], v, rtol=0, atol=2e-3, msg=k)
    losses = [pd.read_csv(tmp_path / n / "metrics.csv")["loss"].to_numpy() for n in ("ddp", "fsdp")]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-3)
    monitors = [pd.read_csv(tmp_path / n / "monitor.csv") for n in ("ddp", "fsdp")]
    assert list(monitors[1]["step"]) == list(monitors[0]["step"]) == [2, 4]
    assert all(m["knn_accuracy"].between(0, 1).all() for m in monitors)

    exported = torch.load(tmp_path / "fsdp" / "export" / "teacher_backbone.pt")
    teacher = {k.removeprefix("teacher.backbone."): v for k, v in fsdp.items() if k.startswith("teacher.backbone.")}
    assert exported.keys() == teacher.keys()
    for k, v in teacher.items():
        assert torch.equal(exported[k], v), k

    ckpts = tmp_path / "fsdp" / "checkpoints"
    (ckpts / "step_00000004.pt").unlink()
    _torchrun(tmp_path / "fsdp.yaml", "--resume")
    again = torch.load(ckpts / "step_00000004.pt", weights_only=False)
    for k, v in fsdp.items():
        assert torch.equal(v, again["model"][k]), k
    assert list(pd.read_csv(tmp_path / "fsdp" / "monitor.csv")["step"]) == [2, 4]  # step 4 redone, not repeated
