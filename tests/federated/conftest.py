"""Fixtures of the federated tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def work(tmp_path_factory, bundled_manifests):
    """A scratch folder and the overrides that point a federated config at the bundled manifests."""
    root = tmp_path_factory.mktemp("fed")
    manifests = "[" + ",".join(str(p) for p in bundled_manifests.values()) + "]"
    return root, [f"data.manifests={manifests}", f"embed.cache_dir={root / 'cache'}"]
