"""What the app serves: the models loaded once, and thread-safe calls into them.

One ``Service`` per process. The classifier's forward (probabilities + embedding in one
pass) goes through a ``MicroBatcher`` so concurrent /classify, /similar and /embed requests
share batches. Attention maps and segmentation run one image at a time; every use of the
networks holds ``model_lock`` (attention capture installs hooks on shared modules).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from dermino.classifier.model import Classifier, load_classifier
from dermino.serve.batching import MicroBatcher
from dermino.serve.explain import Method, explain_image
from dermino.serve.index import CaseIndex
from dermino.serve.uploads import UploadLimits


@dataclass
class Analysis:
    probs: np.ndarray  # (C,) calibrated
    embedding: np.ndarray  # (D,)


class Service:
    def __init__(
        self,
        classifier: Classifier,
        index: CaseIndex | None = None,
        segmenter: Any = None,  # (SegmentationModel, SegmentConfig) from dermino.segment.predict.load_run
        limits: UploadLimits | None = None,
        max_batch: int = 16,
        max_wait_ms: float = 5.0,
    ):
        if index is not None:
            from dermino.serve.index_build import check_compatible

            check_compatible(index, classifier, "--index")
        self.classifier = classifier.eval()
        self.index = index
        self.segmenter = segmenter
        self.limits = limits or UploadLimits()
        self.model_lock = threading.Lock()
        self.batcher: MicroBatcher[Image.Image, Analysis] = MicroBatcher(
            self._analyze_batch, max_batch=max_batch, max_wait_s=max_wait_ms / 1000)

    @classmethod
    def from_folders(cls, classifier: str | Path, index: str | Path | None = None,
                     segmenter: str | Path | None = None, device: str = "cpu", **kw) -> Service:
        clf = load_classifier(classifier, device=device)
        idx = CaseIndex.load(index) if index else None
        seg = None
        if segmenter:
            from dermino.segment.predict import load_run

            seg = load_run(segmenter, device=device)
        return cls(clf, idx, seg, **kw)

    def _analyze_batch(self, images: Sequence[Image.Image]) -> list[Analysis]:
        with self.model_lock:
            probs, feats = self.classifier.predict(images)
        return [Analysis(p, f) for p, f in zip(probs, feats, strict=True)]

    async def analyze(self, image: Image.Image) -> Analysis:
        return await self.batcher(image)

    def explain(self, image: Image.Image, method: Method, head: int | None) -> tuple[Image.Image, tuple[int, int], int]:
        with self.model_lock:
            ov, heat, heads = explain_image(self.classifier.backbone, self.classifier.transform, image, method, head)
        return ov, heat.shape, heads

    def n_heads(self) -> int:
        vit = getattr(self.classifier.backbone, "vit", self.classifier.backbone)
        blocks = getattr(vit, "blocks", None)
        return int(blocks[-1].attn.num_heads) if blocks else 0

    def segment(self, image: Image.Image) -> np.ndarray:
        from dermino.segment.data import to_tensor
        from dermino.segment.predict import predict_batch

        model, cfg = self.segmenter
        h, w = cfg.size_hw
        x = to_tensor(image.resize((w, h), Image.Resampling.BILINEAR), model.backbone.mean, model.backbone.std)
        device = next(model.head.parameters()).device
        with self.model_lock, torch.inference_mode():
            return predict_batch(model, x[None].to(device), [(image.height, image.width)])[0]

    def close(self) -> None:
        self.batcher.close()
