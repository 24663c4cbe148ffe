"""Split one job's chunks of rows across the processes ``torchrun`` starts, and meet again.

Embedding a manifest, building a similar-case index and de-duplicating images are the same
work done independently per image, already cut into numbered chunks that are cached one file
each. Under ``torchrun --nproc_per_node N -m dermino.cli embed|index build|data dedup ...``
chunk ``c`` belongs to rank ``c % N``: fixed by the chunk's number, never by timing, so a
restarted job gives every rank the same chunks again and a finished chunk is never redone.
A chunk is computed with the same batches as in one process, so the merged result is bit
for bit the single-process one (at the same thread count and device type).

The ranks exchange files, not tensors: each writes its finished chunks into the
content-addressed cache, a barrier waits for all of them, and rank 0 reads every chunk and
writes the outputs. Several nodes therefore need the cache folder on a filesystem they all see.
Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) nothing here joins a process group
and a :class:`Shard` of one process owns every chunk: the single-process path is unchanged.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from dermino.runtime import pick_device

#: how long a barrier waits for the slowest rank before the job fails (rather than hangs)
DEFAULT_TIMEOUT_S = 1800


@dataclass(frozen=True)
class Shard:
    """This process's part of a job: it owns chunks ``rank, rank + world_size, ...``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, chunk: int) -> bool:
        return chunk % self.world_size == self.rank

    def device(self, pref: str) -> str:
        """This rank's device for a configured one (``cuda`` -> ``cuda:<local rank>``); unchanged alone."""
        return str(pick_device(pref, self.local_rank)) if self.enabled else pref

    def barrier(self) -> None:
        """Wait until every rank gets here (their chunk files are then all written)."""
        if self.enabled:
            dist.barrier()

    def total(self, count: int) -> int:
        """Sum of ``count`` over the ranks (also a barrier: every rank must contribute)."""
        if not self.enabled:
            return count
        t = torch.tensor([count], dtype=torch.int64)
        dist.all_reduce(t)
        return int(t.item())

    def agree(self, value: str, what: str) -> None:
        """Fail on every rank when the ranks hold different ``value`` (e.g. a cache key).

        Ranks that loaded different models (a random initialisation without ``--weights``)
        would otherwise write chunks under different keys and wait for each other forever.
        """
        if not self.enabled:
            return
        seen: list[str | None] = [None] * self.world_size
        dist.all_gather_object(seen, value)
        if len(set(seen)) > 1:
            raise ValueError(f"the {self.world_size} ranks disagree on the {what} ({len(set(seen))} different "
                             "values): every rank must load the same model and manifest (give --weights when "
                             "a backbone would otherwise be randomly initialised)")


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextlib.contextmanager
def torchrun_shard(device: str = "cpu", timeout_s: float = DEFAULT_TIMEOUT_S) -> Iterator[Shard]:
    """This process's :class:`Shard`: joins torchrun's process group when launched by it, else one process.

    gloo on CPU; on CUDA, NCCL for the device with gloo beside it for the small CPU messages
    (counts, keys). The group made here is destroyed on exit; one that already exists is used
    as it is and left alone.
    """
    if not launched_by_torchrun() and not dist.is_initialized():
        yield Shard()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    made = False
    if not dist.is_initialized():
        dev = pick_device(device, local_rank)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        backend = "cpu:gloo,cuda:nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
        made = True
    try:
        yield Shard(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)
    finally:
        if made and dist.is_initialized():
            dist.destroy_process_group()
