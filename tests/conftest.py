"""Shared fixtures: where the real data lives, and small helpers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DERMINO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _restore_threads():
    """Pretraining sets torch's thread count (``run.threads``); later tests get the suite's own back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def bundled_manifests(tmp_path_factory) -> dict[str, Path]:
    """Manifests of the bundled sample (HAM10000, PH2, ISIC 2017 subsets), written once a session;
    tests read them and never write into their folder."""
    from dermino.data.sample import sample_manifests

    return sample_manifests(tmp_path_factory.mktemp("bundled_manifests"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The full public datasets beside the repo (../shared/data); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA
