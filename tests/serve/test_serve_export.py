"""ONNX export: outputs match PyTorch (fp32, < 1e-4) for any batch size."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from _serve_fixtures import ham_images, tiny_classifier
from dermino.classifier.model import save_classifier
from dermino.cli import main
from dermino.data.images import read_rgb
from dermino.serve.export import check_onnx, export_onnx, onnx_session

pytest.importorskip("onnxruntime")


def test_onnx_parity_and_dynamic_batch(tmp_path):
    clf = tiny_classifier()
    path = export_onnx(clf, tmp_path / "clf.onnx")
    images = [read_rgb(p) for p in ham_images(3)]
    diffs = check_onnx(clf, path, images)
    assert max(diffs.values()) < 1e-4, diffs
    sess = onnx_session(path)
    for n in (1, 5):
        x = torch.randn(n, 3, 56, 56)
        probs, logits, emb = sess.run(None, {"image": x.numpy()})
        with torch.inference_mode():
            np.testing.assert_allclose(probs, clf(x).numpy(), atol=1e-4)
        assert logits.shape == (n, 7) and emb.shape == (n, 64)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["label_names"] == clf.label_names and meta["preprocessing"]["image_size"] == 56


def test_export_cli(tmp_path, capsys):
    folder = save_classifier(tiny_classifier(), tmp_path / "clf")
    assert main(["export", "onnx", "--classifier", str(folder), "--out", str(tmp_path / "m.onnx")]) == 0
    out = capsys.readouterr().out
    assert "max |onnxruntime - pytorch| probs" in out and (tmp_path / "m.onnx").is_file()
