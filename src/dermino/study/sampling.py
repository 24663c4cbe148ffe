"""Stratified, seeded case selection: every diagnosis represented in proportion, reproducibly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def stratified_sample(labels: Sequence[str], n: int, seed: int = 0, min_per_class: int = 1) -> list[int]:
    """Indices of ``n`` items, allocated to classes by largest remainder (each present class gets
    at least ``min_per_class`` when ``n`` allows), drawn at random within a class, shuffled."""
    labels = list(labels)
    if n < 1:
        raise ValueError(f"--cases must be >= 1, got {n}")
    if n > len(labels):
        raise ValueError(f"asked for {n} cases but the manifest has only {len(labels)} labelled images")
    rng = np.random.default_rng(seed)
    classes = sorted(set(labels))
    by_class = {c: [i for i, lab in enumerate(labels) if lab == c] for c in classes}
    counts = np.array([len(by_class[c]) for c in classes])
    floor = np.minimum(counts, min_per_class) if n >= len(classes) * min_per_class else np.zeros_like(counts)
    rest = n - floor.sum()
    share = (counts - floor) / max(1, (counts - floor).sum()) * rest
    alloc = floor + np.floor(share).astype(int)
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    for j in order:
        if alloc.sum() >= n:
            break
        if alloc[j] < counts[j]:
            alloc[j] += 1
    while alloc.sum() < n:  # rounding left room only in classes that still have images
        j = int(np.argmax(counts - alloc))
        alloc[j] += 1
    picked: list[int] = []
    for c, k in zip(classes, alloc, strict=True):
        picked += [by_class[c][i] for i in rng.permutation(len(by_class[c]))[:k]]
    return [picked[i] for i in rng.permutation(len(picked))]
