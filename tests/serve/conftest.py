"""Fixtures of the service tests."""

from __future__ import annotations

import pytest

from _serve_fixtures import TINY, tiny_classifier
from dermino.segment.config import SegmentConfig
from dermino.segment.heads import build_segmentation_model
from dermino.serve.index_build import build_index


@pytest.fixture(scope="module")
def service_parts(tmp_path_factory, bundled_manifests):
    """What a Service is made of, tiny: a random classifier, the case index of the bundled HAM10000
    train rows, and a linear segmentation head; plus a scratch folder."""
    tmp = tmp_path_factory.mktemp("serve")
    clf = tiny_classifier()
    index = build_index(clf, bundled_manifests["ham10000"], tmp / "index", splits=["train"],
                        cache_dir=str(tmp / "cache"), progress=False)
    seg_cfg = SegmentConfig(manifest="unused", backbone="dermino_vit_tiny_14", backbone_overrides=dict(TINY),
                            img_size=[56])
    return clf, index, (build_segmentation_model(seg_cfg).eval(), seg_cfg), tmp
