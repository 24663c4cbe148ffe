"""Property-based API test: schemathesis generates requests from the OpenAPI schema.

Every generated request (random files, out-of-range and missing parameters) must get a
response that the schema documents (status, content type, body schema), and never a 5xx.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from _serve_fixtures import TINY, tiny_classifier
from dermino.serve.app import create_app
from dermino.serve.index import CaseIndex
from dermino.serve.service import Service
from dermino.serve.uploads import UploadLimits

schemathesis = pytest.importorskip("schemathesis")


def _app():
    clf = tiny_classifier()
    from dermino.serve.index_build import embedder_id

    index = CaseIndex(dim=64, embedder=embedder_id(clf))
    import numpy as np

    rng = np.random.default_rng(0)
    index.add(rng.normal(size=(8, 64)), [{"image": f"/refs/case{i}.jpg", "label": "melanoma", "age": 40.0 + i}
                                         for i in range(8)], [b"\xff\xd8\xff"] * 8)
    from dermino.segment.config import SegmentConfig
    from dermino.segment.heads import build_segmentation_model

    seg_cfg = SegmentConfig(manifest="unused", backbone="dermino_vit_tiny_14", backbone_overrides=dict(TINY),
                            img_size=[56])
    segmenter = (build_segmentation_model(seg_cfg).eval(), seg_cfg)
    limits = UploadLimits(max_bytes=100_000, max_pixels=1_000_000)
    return create_app(Service(clf, index, segmenter, limits=limits))


schema = schemathesis.openapi.from_asgi("/openapi.json", _app())


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_schema(case):
    # a schema cannot say "a decodable image": random bytes that are schema-valid are rightly refused
    # (415/422, documented), so the check that valid data is accepted does not apply
    from schemathesis.checks import positive_data_acceptance

    case.call_and_validate(excluded_checks=[positive_data_acceptance])
