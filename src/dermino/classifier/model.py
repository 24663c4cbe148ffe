"""The classifier a service loads: backbone, feature standardisation, linear head, temperature.

Saved as one folder, data only (no pickles): ``model.safetensors`` (backbone + head tensors)
and ``classifier.json`` (label names, how to rebuild the backbone, preprocessing, temperature,
training-data summary, metrics with CIs). ``load_classifier`` rebuilds it with
``dermino.models.create`` and a strict state-dict load, so a folder from another version that
does not match fails loudly instead of predicting garbage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from dermino.features import EvalTransform, pool_features
from dermino.files import atomic_dir, load_safetensors
from dermino.models import create
from dermino.models.backbone import ViTBackbone

FORMAT = "dermino-classifier"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "classifier.json"


class Classifier(nn.Module):
    """``forward(images) -> calibrated probabilities``; ``logits`` and ``embed`` for the parts."""

    def __init__(
        self,
        backbone: nn.Module,
        label_names: Sequence[str],
        transform: EvalTransform,
        pool: str = "cls",
        feat_dim: int | None = None,
        temperature: float = 1.0,
        backbone_spec: dict[str, Any] | None = None,
        info: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.label_names = list(label_names)
        self.transform = transform
        self.pool = pool
        dim = feat_dim or int(backbone.embed_dim) * (2 if pool == "cls+mean" else 1)
        self.head = nn.Linear(dim, len(self.label_names))
        self.register_buffer("feat_mean", torch.zeros(dim))
        self.register_buffer("feat_std", torch.ones(dim))
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.backbone_spec = dict(backbone_spec or {})
        self.info: dict[str, Any] = dict(info or {})

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (what the similar-case index stores)."""
        return pool_features(self.backbone.forward_features(x), self.pool)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.embed(x) - self.feat_mean) / self.feat_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x) / self.temperature, dim=-1)

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.transform(im) for im in images])

    @torch.inference_mode()
    def predict(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated probabilities (B, C), embeddings (B, D)) in one backbone pass."""
        x = self.preprocess(images).to(self.feat_mean.device)
        feats = self.embed(x)
        logits = self.head((feats - self.feat_mean) / self.feat_std)
        probs = torch.softmax(logits / self.temperature, dim=-1)
        return probs.float().cpu().numpy(), feats.float().cpu().numpy()


def backbone_spec(name: str, model: nn.Module, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """How to rebuild ``model`` with ``create`` (the weights come from the classifier file)."""
    if isinstance(model, ViTBackbone):
        spec = asdict(model.spec)
        if not spec.get("extra"):
            spec.pop("extra", None)
        return {"name": name, "overrides": spec}
    return {"name": name, "overrides": dict(overrides or {})}


def save_classifier(model: Classifier, out_dir: str | Path) -> Path:
    """Write the folder atomically: a crash leaves the previous folder (or none), never half of one."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / WEIGHTS_FILE))
        config = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "label_names": model.label_names,
            "backbone": model.backbone_spec,
            "pool": model.pool,
            "feat_dim": int(model.head.in_features),
            "temperature": float(model.temperature),
            "preprocessing": model.transform.params(),
            **model.info,
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=_json_default))
        for extra in out.glob("*.png") if out.is_dir() else []:  # keep plots written beside it
            if not (tmp / extra.name).exists():
                shutil.copy2(extra, tmp / extra.name)
    return out


def read_classifier_config(folder: str | Path) -> dict[str, Any]:
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (is {folder} a 'dermino classifier train' output?)")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT:
        raise ValueError(f"{path}: format is {config.get('format')!r}, expected {FORMAT!r}")
    if int(config.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{path}: version {config['version']} is newer than this dermino ({FORMAT_VERSION})")
    for key in ("label_names", "backbone", "preprocessing", "temperature", "pool"):
        if key not in config:
            raise KeyError(f"{path}: missing key {key!r}")
    return config


def load_classifier(folder: str | Path, device: str = "cpu") -> Classifier:
    """Rebuild a saved classifier in eval mode (strict: every tensor must match)."""
    folder = Path(folder)
    config = read_classifier_config(folder)
    spec = config["backbone"]
    backbone = create(spec["name"], **spec.get("overrides", {}))
    p = config["preprocessing"]
    transform = EvalTransform(
        int(p["image_size"]), int(p["resize"]), tuple(p["mean"]), tuple(p["std"]), p.get("interpolation", "bicubic")
    )
    info = {k: v for k, v in config.items()
            if k not in ("format", "version", "label_names", "backbone", "pool", "feat_dim", "temperature",
                         "preprocessing")}
    model = Classifier(backbone, config["label_names"], transform, config["pool"], config.get("feat_dim"),
                       float(config["temperature"]), spec, info)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} not found")
    missing, unexpected = model.load_state_dict(load_safetensors(weights, "classifier weights"), strict=False)
    if missing or unexpected:
        raise ValueError(f"{weights} does not match {folder / CONFIG_FILE}: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return model.to(device).eval()


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
