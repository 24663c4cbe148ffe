"""A tiny text-capable backbone for tests: image features from pooled colour, a hash text tower.

It follows the interface of ``dermino.models.text``: ``forward_features`` returns ``cls``,
``patch`` and ``proj``; ``model.text_tower`` has ``template``, ``logit_scale`` and ``encode``.
``CALLS`` counts forward passes (the leaderboard's resume test reads it across processes via a file).
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import torch
from torch import nn

NAME = "fake_vl_test"


class HashTextTower:
    template = "a dermoscopic image of {}."
    logit_scale = 20.0

    def __init__(self, dim: int):
        self.dim = dim

    def encode(self, texts):
        rows = []
        for t in texts:
            seed = int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).normal(size=self.dim)
            rows.append(v / np.linalg.norm(v))
        return torch.as_tensor(np.stack(rows), dtype=torch.float32)


class FakeVL(nn.Module):
    patch_size = 1

    def __init__(self, dim: int = 16, seed: int = 0, fail: bool = False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.lin = nn.Linear(12, dim)
        with torch.no_grad():
            self.lin.weight.copy_(torch.randn(dim, 12, generator=g))
        self.proj = nn.Linear(dim, dim, bias=False)
        self.text_tower = HashTextTower(dim)
        self.fail = fail
        self.seed = seed

    def forward_features(self, x: torch.Tensor) -> dict:
        if self.fail:
            raise RuntimeError("this backbone is broken on purpose")
        count = os.environ.get("DERMINO_TEST_EMBED_CALLS")
        if count:  # one line per forward pass, naming the backbone (by seed)
            with open(count, "a") as fh:
                fh.write(f"{self.seed}\n")
        if os.environ.get("DERMINO_TEST_HANG_SEED") == str(self.seed):
            time.sleep(600)  # stands in for a long embedding that gets killed
        stats = torch.cat([x.mean((2, 3)), x.std((2, 3)), x.amax((2, 3)), x.amin((2, 3))], 1)
        h = self.lin(stats)
        p = self.proj(h)
        return {"cls": h, "patch": h[:, None, :], "proj": p / p.norm(dim=1, keepdim=True)}


def register_fake() -> None:
    from dermino.models.registry import register

    register(NAME)(lambda **kw: FakeVL(**kw))


def unregister_fake() -> None:
    from dermino.models import registry

    registry._REGISTRY.pop(NAME, None)
    registry._TINY_OVERRIDES.pop(NAME, None)
