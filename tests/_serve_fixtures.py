"""Builders shared by the classifier and serve tests: tiny random ViTs and real bundled images."""

from __future__ import annotations

from pathlib import Path

import torch

from dermino.classifier.model import Classifier, backbone_spec
from dermino.data.sample import sample_root
from dermino.features import EmbedConfig, eval_transform
from dermino.models import create

# layerscale 1.0: a random ViT whose CLS token actually varies between images
TINY = {"depth": 2, "embed_dim": 64, "num_heads": 2, "img_size": 56, "layerscale_init": 1.0}
LABELS = ["actinic keratosis", "basal cell carcinoma", "benign keratosis", "dermatofibroma",
          "melanocytic nevus", "melanoma", "vascular lesion"]


def tiny_classifier(seed: int = 0, temperature: float = 1.5) -> Classifier:
    torch.manual_seed(seed)
    bb = create("dermino_vit_tiny_14", **TINY)
    transform = eval_transform(bb, EmbedConfig(image_size=56))
    clf = Classifier(bb, LABELS, transform, "cls", temperature=temperature,
                     backbone_spec=backbone_spec("dermino_vit_tiny_14", bb))
    with torch.no_grad():
        clf.head.weight.normal_(std=0.5)
    return clf.eval()


def ham_images(n: int = 4) -> list[Path]:
    return sorted((sample_root() / "ham10000" / "images").glob("*.jpg"))[:n]
