"""ONNX export of backbone + head (calibrated probabilities, logits and the embedding).

Users outside Python (C#, Java, a browser via onnxruntime-web) can then run the classifier
without torch. The batch axis is dynamic; the image size is the classifier's crop size.
``check_onnx`` runs the file with onnxruntime on real preprocessed images and reports the
largest absolute difference to PyTorch, so a silent operator mismatch is caught at export.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from dermino.classifier.model import Classifier

log = logging.getLogger(__name__)

OUTPUTS = ("probs", "logits", "embedding")


class _Exported(nn.Module):
    def __init__(self, classifier: Classifier):
        super().__init__()
        self.c = classifier

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.c.embed(image)
        logits = self.c.head((feats - self.c.feat_mean) / self.c.feat_std)
        return torch.softmax(logits / self.c.temperature, dim=-1), logits, feats


def export_onnx(classifier: Classifier, path: str | Path, opset: int = 18) -> Path:
    """Write ``path`` (.onnx) and ``path.json`` (labels, preprocessing, output names)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    classifier = classifier.cpu().eval()
    s = classifier.transform.image_size
    example = torch.randn(2, 3, s, s)
    tmp = path.with_name(path.name + ".tmp")
    with warnings.catch_warnings():
        # the tracer warns about Python-side shape checks: they are constant for the fixed image size
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            _Exported(classifier), (example,), str(tmp), input_names=["image"], output_names=list(OUTPUTS),
            dynamic_axes={"image": {0: "batch"}, **{o: {0: "batch"} for o in OUTPUTS}},
            opset_version=opset, dynamo=False,
        )
    tmp.replace(path)
    meta = {"label_names": classifier.label_names, "preprocessing": classifier.transform.params(),
            "input": {"name": "image", "shape": ["batch", 3, s, s], "dtype": "float32"},
            "outputs": list(OUTPUTS), "temperature": float(classifier.temperature)}
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
    return path


def onnx_session(path: str | Path, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def check_onnx(classifier: Classifier, path: str | Path, images: Sequence[Image.Image]) -> dict[str, float]:
    """Max abs difference per output between onnxruntime and PyTorch on ``images`` (one batch)."""
    x = classifier.preprocess(images)
    with torch.inference_mode():
        ref = [t.numpy() for t in _Exported(classifier.cpu().eval())(x)]
    got = onnx_session(path).run(list(OUTPUTS), {"image": x.numpy()})
    return {name: float(np.abs(r - g).max()) for name, r, g in zip(OUTPUTS, ref, got, strict=True)}
