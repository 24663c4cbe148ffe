"""Fixtures of the pretraining tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def manifests(bundled_manifests) -> list[str]:
    """The bundled manifests as ``data.manifests`` takes them."""
    return [str(p) for p in bundled_manifests.values()]


@pytest.fixture(scope="session")
def manifests_by_name(bundled_manifests) -> dict[str, str]:
    return {k: str(v) for k, v in bundled_manifests.items()}
