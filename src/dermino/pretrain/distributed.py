"""torchrun set-up: one process per device, configured from the environment torchrun exports.

``torchrun --nproc_per_node=N -m dermino.cli pretrain ...`` sets RANK / WORLD_SIZE /
LOCAL_RANK / MASTER_ADDR / MASTER_PORT; without them everything runs as a single process.
The backend is NCCL on GPUs and gloo on CPU, so the same code path is testable on a laptop.

Two data-parallel modes: DDP (every rank holds the whole student and teacher; gradients are
all-reduced) and FSDP (``run.fsdp=true``: PyTorch's ``fully_shard``, parameters, gradients and
optimizer state split across ranks, for models that do not fit one device). Under FSDP the
teacher is sharded exactly like the student, so the EMA update is a per-shard elementwise
operation and never needs the whole model in one place.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from dermino.runtime import pick_device  # re-exported: the one device chooser


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str = "auto", timeout_s: int = 1800) -> DistInfo:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); else a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def wrap_model(module: nn.Module, info: DistInfo) -> nn.Module:
    """DDP around the student branch (gradients all-reduced); unchanged for a single process."""
    if not info.enabled:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False)


def shard_branches(branches: list[nn.Module], info: DistInfo) -> None:
    """FSDP: shard each transformer block, then each branch (its heads go with the root).

    Student and teacher get the same layout, so their parameter shards line up one to one.
    Works in place: afterwards the branches' parameters are DTensors holding this rank's shard.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not info.enabled:
        raise ValueError("run.fsdp=true needs several processes: launch with torchrun --nproc_per_node=N")
    mesh = init_device_mesh(info.device.type, (info.world_size,))
    for branch in branches:
        # per-block units keep only one block's whole parameters in memory at a time; a backbone
        # without timm-style blocks is sharded as one unit with its branch
        for block in getattr(getattr(branch.backbone, "vit", None), "blocks", []):
            fully_shard(block, mesh=mesh)
        fully_shard(branch, mesh=mesh)


def full_value(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor from a DTensor (e.g. a gradient norm under FSDP); unchanged otherwise."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        t = t.clone()
        dist.all_reduce(t)
        t /= dist.get_world_size()
    return t


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
