"""Hostile image shapes: every endpoint answers 200 or a clear 4xx, and the cost is bounded.

A thin strip (1 x N) used to be scaled up to the model size on its short side (gigabytes for
a 475-byte PNG), and /explain answered 500 for it. Sizes here are drawn by hypothesis over
1..5000 x 1..5000 with extreme aspect ratios, against every image endpoint, on a strict
server (refuses aspect ratios over 20:1) and a permissive one (accepts all, shrinks to
``max_side``); the peak RSS of the process is measured around each request.
"""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from _serve_fixtures import LABELS, TINY, ham_images
from dermino.classifier.model import Classifier, backbone_spec
from dermino.data.images import read_rgb
from dermino.evaluate.embeddings import EmbedConfig, EvalTransform, eval_transform
from dermino.models import create
from dermino.segment.config import SegmentConfig
from dermino.segment.heads import build_segmentation_model
from dermino.serve.app import create_app
from dermino.serve.explain import crop_box, explain_image, overlay
from dermino.serve.service import Service
from dermino.serve.uploads import UploadLimits

ENDPOINTS = ("/classify", "/explain", "/segment", "/embed")
MAX_SIDE = 512
MIB = 1024 * 1024


def _peak_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)


def _png(w: int, h: int) -> bytes:
    """A real lesion crop stretched to w x h (a solid colour would be too easy for the models)."""
    src = read_rgb(ham_images(1)[0])
    buf = io.BytesIO()
    src.resize((w, h), Image.Resampling.NEAREST).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


@pytest.fixture(scope="module")
def clients():
    torch.manual_seed(0)
    # 112-px crops: large enough that scaling a thin strip's short side up would cost hundreds of MB
    bb = create("dermino_vit_tiny_14", **{**TINY, "img_size": 112})
    clf = Classifier(bb, LABELS, eval_transform(bb, EmbedConfig(image_size=112)), "cls",
                     backbone_spec=backbone_spec("dermino_vit_tiny_14", bb)).eval()
    seg_cfg = SegmentConfig(manifest="unused", backbone="dermino_vit_tiny_14", backbone_overrides=dict(TINY),
                            img_size=[56])
    segmenter = (build_segmentation_model(seg_cfg).eval(), seg_cfg)
    strict = UploadLimits(max_bytes=4 * MIB, max_side=MAX_SIDE)
    permissive = UploadLimits(max_bytes=4 * MIB, max_side=MAX_SIDE, max_aspect=10_000)
    with (TestClient(create_app(Service(clf, None, segmenter, limits=strict))) as a,
          TestClient(create_app(Service(clf, None, segmenter, limits=permissive))) as b):
        yield a, b


sides = st.one_of(st.integers(1, 5000), st.sampled_from([1, 2, 3, 13, 14, 15, 5000]))


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(w=sides, h=sides, endpoint=st.sampled_from(ENDPOINTS), permissive=st.booleans())
@example(w=600, h=1, endpoint="/explain", permissive=True)
@example(w=1, h=600, endpoint="/explain", permissive=True)
@example(w=5000, h=1, endpoint="/explain", permissive=True)
@example(w=1, h=5000, endpoint="/explain", permissive=True)
@example(w=1, h=5000, endpoint="/classify", permissive=True)
@example(w=1, h=5000, endpoint="/segment", permissive=True)
@example(w=5000, h=1, endpoint="/classify", permissive=False)
@example(w=1, h=1, endpoint="/explain", permissive=False)
@example(w=4000, h=3000, endpoint="/explain", permissive=False)
def test_every_shape_gets_200_or_a_clear_422_at_bounded_memory(clients, w, h, endpoint, permissive):
    data = _png(w, h)
    client = clients[1] if permissive else clients[0]
    _reset_peak()
    before = _rss_mib()
    r = client.post(endpoint, files={"file": ("strip.png", data, "image/png")})
    grew = _peak_mib() - before
    refused = not permissive and max(w, h) > 20 * min(w, h)
    if refused:
        assert r.status_code == 422, (w, h, endpoint, r.text)
        assert "aspect ratio" in r.json()["detail"]
    else:
        assert r.status_code == 200, (w, h, endpoint, r.text)
    # decoding costs about 3 bytes a pixel (RGB) plus PIL's buffers; everything after it works
    # on at most MAX_SIDE x MAX_SIDE pixels and the 112-px crop, whatever the aspect ratio
    bound = 48 + 8 * w * h / MIB
    assert grew < bound, f"{w}x{h} {endpoint}: peak RSS grew {grew:.0f} MiB > {bound:.0f} MiB"


def test_thin_strip_transform_is_cheap_and_matches_resize_then_crop():
    t = EvalTransform(112, 112, (0.5,) * 3, (0.5,) * 3)
    strip = Image.fromarray(np.random.default_rng(0).integers(0, 255, (1, 20_000, 3), dtype=np.uint8))
    _reset_peak()
    before = _rss_mib()
    start = time.perf_counter()
    x = t(strip)
    took, grew = time.perf_counter() - start, _peak_mib() - before
    assert x.shape == (3, 112, 112) and torch.isfinite(x).all()
    # resizing the whole strip would be 112 x 2,240,000 x 3 bytes = 750 MB
    assert grew < 32 and took < 1.0, (grew, took)
    # the box path gives the same pixels as the exact path (within interpolation rounding)
    wide = Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 400, 3), dtype=np.uint8))
    nw, nh = round(400 * 112 / 30), 112
    left = (nw - 112) // 2
    exact = wide.resize((nw, nh), Image.BICUBIC).crop((left, 0, left + 112, 112))
    want = (torch.from_numpy(np.asarray(exact, dtype=np.float32) / 255).permute(2, 0, 1) - 0.5) / 0.5
    assert (t(wide) - want).abs().max() <= 2 / 255 / 0.5 + 1e-6


@pytest.mark.parametrize("size", [(600, 1), (1, 600), (5000, 1), (1, 5000), (1, 1), (13, 2)])
def test_explain_overlay_of_a_thin_image_has_its_size(size):
    torch.manual_seed(0)
    bb = create("dermino_vit_tiny_14", **TINY).eval()
    t = eval_transform(bb, EmbedConfig(image_size=56))
    image = Image.new("RGB", size, (180, 110, 90))
    box = crop_box(t, size)
    assert 0 <= box[0] < box[2] <= size[0] + 1e-6 and 0 <= box[1] < box[3] <= size[1] + 1e-6
    ov, heat, heads = explain_image(bb, t, image, "rollout")
    assert ov.size == size and heat.shape == (4, 4) and heads == 2
    assert overlay(image, np.ones((4, 4)), box).size == size


def test_limits_are_declared_checks():
    with pytest.raises(ValueError, match="max_aspect"):
        UploadLimits(max_aspect=0.5)
    with pytest.raises(ValueError, match="max_side"):
        UploadLimits(max_side=0)
