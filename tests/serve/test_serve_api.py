"""Every endpoint and every kind of bad upload, through FastAPI's TestClient."""

from __future__ import annotations

import io
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from _serve_fixtures import ham_images, tiny_classifier
from dermino.serve.app import create_app
from dermino.serve.batching import MicroBatcher
from dermino.serve.index import CaseIndex
from dermino.serve.service import Service
from dermino.serve.uploads import UploadLimits


@pytest.fixture(scope="module")
def parts(service_parts):
    return service_parts


@pytest.fixture(scope="module")
def client(parts):
    clf, index, segmenter, _ = parts
    limits = UploadLimits(max_bytes=200_000, max_pixels=2_000_000)
    with TestClient(create_app(Service(clf, index, segmenter, limits=limits))) as c:
        yield c


def jpeg_bytes(i: int = 0) -> bytes:
    return ham_images(i + 1)[i].read_bytes()


def post(client, path, data, ctype="image/jpeg", name="lesion.jpg", **params):
    return client.post(path, params=params, files={"file": (name, data, ctype)})


def test_classify_returns_calibrated_top_k(client, parts):
    clf = parts[0]
    r = post(client, "/classify", jpeg_bytes(), top_k=3)
    assert r.status_code == 200, r.text
    body = r.json()
    probs = [p["probability"] for p in body["predictions"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True)
    expected, _ = clf.predict([Image.open(io.BytesIO(jpeg_bytes())).convert("RGB")])
    assert probs[0] == pytest.approx(float(expected.max()), abs=1e-5)
    assert body["predictions"][0]["label"] == clf.label_names[int(expected.argmax())]
    assert body["temperature"] == pytest.approx(1.5) and body["n_classes"] == 7
    all_probs = post(client, "/classify", jpeg_bytes(), top_k=100).json()["predictions"]
    assert len(all_probs) == 7 and sum(p["probability"] for p in all_probs) == pytest.approx(1, abs=1e-5)


def test_similar_finds_the_image_itself_first(client, parts):
    index: CaseIndex = parts[1]
    member = index.records[5]  # an image that is in the index
    data = Path(member["image"]).read_bytes()
    r = post(client, "/similar", data, k=4)
    assert r.status_code == 200, r.text
    cases = r.json()["cases"]
    assert len(cases) == 4 and [c["rank"] for c in cases] == [1, 2, 3, 4]
    assert cases[0]["image_name"] == member["image"].rsplit("/", 1)[-1]
    assert cases[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert cases[0]["label"] == member["label"]
    assert [c["similarity"] for c in cases] == sorted((c["similarity"] for c in cases), reverse=True)
    assert cases[0]["thumbnail"].startswith("data:image/jpeg;base64,")
    assert "/" not in cases[0]["image_name"]  # no server paths leak


def test_explain_overlay_has_the_image_size(client):
    for params in ({"method": "rollout"}, {"method": "cls"}, {"method": "cls", "head": 1}):
        r = post(client, "/explain", jpeg_bytes(), **params)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["grid"] == [4, 4] and body["heads"] == 2
        png = Image.open(io.BytesIO(_b64(body["overlay"])))
        assert png.size == (200, 150)  # HAM10000 sample images are 200x150
    assert post(client, "/explain", jpeg_bytes(), method="cls", head=2).status_code == 422
    assert post(client, "/explain", jpeg_bytes(), method="gradcam").status_code == 422


def test_segment_and_embed(client, parts):
    r = post(client, "/segment", jpeg_bytes())
    assert r.status_code == 200, r.text
    mask = np.asarray(Image.open(io.BytesIO(_b64(r.json()["mask"]))))
    assert mask.shape == (150, 200) and set(np.unique(mask)) <= {0, 255}
    assert r.json()["lesion_fraction"] == pytest.approx((mask > 0).mean())
    e = post(client, "/embed", jpeg_bytes()).json()
    _, feats = parts[0].predict([Image.open(io.BytesIO(jpeg_bytes())).convert("RGB")])
    assert e["dim"] == 64
    np.testing.assert_allclose(e["embedding"], feats[0], atol=1e-5)


def test_health_version_schema_and_ui(client):
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["index_size"] > 100 and h["segmenter"] is True
    assert h["worker"] == {"pid": os.getpid(), "index": 0, "workers": 1}  # one process: this one
    v = client.get("/version").json()
    assert v["classifier"]["labels"][0] == "actinic keratosis" and v["index"]["size"] == h["index_size"]
    schema = client.get("/openapi.json").json()
    assert {"/classify", "/similar", "/explain", "/segment", "/embed", "/health", "/version"} <= set(schema["paths"])
    page = client.get("/")
    assert page.status_code == 200 and "not a medical device" in page.text
    assert client.get("/static/components.js").status_code == 200


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 120, 100)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "ctype", "status", "words"),
    [
        (b"%PDF-1.4 not an image", "application/pdf", 415, "content type"),
        (b"just some text", "image/jpeg", 422, "not an image"),
        (b"", "image/jpeg", 422, "empty"),
        ("truncated", "image/jpeg", 422, "truncated"),
        ("bomb", "image/png", 413, "decompression bomb"),
        ("gif", "image/png", 415, "format GIF"),
        ("oversize", "image/png", 413, "larger than the limit"),
    ],
)
def test_bad_uploads_get_clear_4xx(client, data, ctype, status, words):
    if data == "truncated":
        full = jpeg_bytes()
        data = full[: len(full) // 2]
    elif data == "bomb":
        data = _png((2000, 1500))  # 3 MP > the 2 MP limit of this server; a small file
    elif data == "gif":
        buf = io.BytesIO()
        Image.new("RGB", (20, 20)).save(buf, format="GIF")
        data = buf.getvalue()
    elif data == "oversize":
        data = np.random.default_rng(0).integers(0, 255, 150_000 + 50_000, dtype=np.uint8).tobytes()
        data = _png((10, 10)) + data  # 200 kB + a bit > 200_000-byte limit
    for path in ("/classify", "/similar", "/explain", "/segment", "/embed"):
        r = post(client, path, data, ctype=ctype)
        assert r.status_code == status, (path, r.text)
        assert words in r.json()["detail"] and ("lesion.jpg" in r.json()["detail"] or status == 413)


def test_request_body_over_the_limit_is_refused_before_parsing(client):
    r = client.post("/classify", content=b"x" * 400_000, headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 413 and "request body" in r.json()["detail"]


def test_missing_file_and_bad_params(client):
    assert client.post("/classify").status_code == 422
    assert post(client, "/classify", jpeg_bytes(), top_k=0).status_code == 422
    assert post(client, "/similar", jpeg_bytes(), k=51).status_code == 422


def test_without_index_or_segmenter_404(parts):
    clf = parts[0]
    with TestClient(create_app(Service(clf))) as c:
        assert post(c, "/similar", jpeg_bytes()).status_code == 404
        assert "--segmenter" in post(c, "/segment", jpeg_bytes()).json()["detail"]
        assert post(c, "/classify", jpeg_bytes()).status_code == 200


def test_uploads_saved_only_when_configured_and_only_inside_the_folder(parts, tmp_path):
    clf = parts[0]
    keep = tmp_path / "keep"
    limits = UploadLimits(save_dir=str(keep))
    with TestClient(create_app(Service(clf, limits=limits))) as c:
        r = post(c, "/classify", jpeg_bytes(), name="../../escape.jpg")
        assert r.status_code == 200
    files = sorted(p.name for p in keep.iterdir())
    assert len(files) == 2 and files[0].endswith(".jpg") and files[1].endswith(".jpg.json")
    assert not (tmp_path / "escape.jpg").exists() and not list(tmp_path.parent.glob("escape*"))
    assert json.loads((keep / files[1]).read_text())["client_name"] == "escape.jpg"


def test_index_mismatch_is_refused(parts):
    clf, index, _, _ = parts
    other = tiny_classifier(seed=1)
    with pytest.raises(ValueError, match="different model"):
        Service(other, index)
    assert Service(clf, index).index is index


def test_concurrent_requests_are_batched():
    seen: list[int] = []
    started, gate = threading.Event(), threading.Event()

    def fn(items):
        started.set()
        gate.wait(5)
        seen.append(len(items))
        return [x * 2 for x in items]

    b = MicroBatcher(fn, max_batch=8, max_wait_s=0.0)
    futs = [b.submit(0)]  # the first batch blocks the worker...
    assert started.wait(5)
    futs += [b.submit(i) for i in range(1, 9)]  # ... while 8 more queue up: one batch of 8 next
    gate.set()
    assert [f.result(5) for f in futs] == [2 * i for i in range(9)]
    assert seen == [1, 8] and b.stats()["largest_batch"] == 8
    b.close()

    def boom(items):
        raise RuntimeError("model failed")

    b2 = MicroBatcher(boom)
    with pytest.raises(RuntimeError, match="model failed"):
        b2.submit(1).result(5)
    b2.close()


def _b64(data_url: str) -> bytes:
    import base64

    return base64.b64decode(data_url.split(",", 1)[1])


def test_service_from_saved_folders(parts, tmp_path):
    from dermino.classifier.model import save_classifier
    from dermino.classifier.train import ClassifierConfig
    from dermino.config import load_config

    clf, index, _, _ = parts
    svc = Service.from_folders(save_classifier(clf, tmp_path / "clf"), index.save(tmp_path / "idx"))
    with TestClient(create_app(svc)) as c:
        assert c.get("/health").json()["index_size"] == len(index)
        assert post(c, "/similar", jpeg_bytes(), k=2).status_code == 200
    # the shipped config loads and validates
    from pathlib import Path as P

    cfg = load_config(ClassifierConfig, P(__file__).parents[2] / "configs" / "classifier" / "linear.yaml")
    assert cfg.val_split == "" and cfg.pool == "cls"
    with pytest.raises(ValueError):
        load_config(ClassifierConfig, None, ["pool=max"]).validate()


def test_accepted_uploads_stay_in_memory(parts):
    # Starlette spools file parts above its threshold to a temporary file on disk; the app raises
    # the threshold above the largest accepted upload, so an accepted file never touches disk
    from starlette.formparsers import MultiPartParser

    limits = UploadLimits(max_bytes=3 * 1024 * 1024)
    create_app(Service(parts[0], limits=limits))
    assert MultiPartParser.spool_max_size >= limits.max_bytes
