"""What one site does: features from the frozen backbone, a linear head trained and evaluated on them.

Only the head trains, so each site embeds its images once (the evaluation suite's embedding
cache) and a federated round costs a few matrix products per client. Features are
L2-normalised and scaled by sqrt(dim) on the way in: every site gets the same input scale
without sharing any statistic of its data (z-scoring with pooled means would leak them).
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from dermino.evaluate.metrics import macro_auroc, macro_f1
from dermino.features import extract_embeddings, memory_tier
from dermino.federated.config import FederatedConfig
from dermino.federated.partitions import ClientData


def backbone_key(cfg: FederatedConfig) -> tuple:
    """Which frozen backbone: registry name, weights file, overrides."""
    return (cfg.backbone.model, cfg.backbone.weights, tuple(sorted(cfg.backbone.overrides.items())))


def features_key(cfg: FederatedConfig) -> tuple:
    """Which pooled features: the backbone and the test-time transform + pooling."""
    return (*backbone_key(cfg), cfg.embed.image_size, cfg.embed.resize, cfg.embed.pool, cfg.embed.interpolation)


def _preload_features(cfg: FederatedConfig, frame) -> int:
    """Embed ``frame`` once and remember every image's feature in this process.

    A simulation or benchmark that splits the same manifest several ways (by source, by
    dx_type, by body site) then embeds each image once instead of once per partition.
    """
    emb = extract_embeddings(backbone(cfg), frame, cfg.embed, weights=cfg.backbone.weights,
                             model_name=cfg.backbone.model, progress=cfg.progress)
    bank = memory_tier().bank("federated.features", features_key(cfg))
    bank.update(zip(frame["image"].astype(str), emb.features, strict=True))
    return len(bank)


class LinearHead(nn.Module):
    """``Linear(dim, classes)`` on L2-normalised, sqrt(dim)-scaled features."""

    def __init__(self, dim: int, n_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.normalize(x, dim=1) * math.sqrt(x.shape[1])
        return self.fc(x)


def init_head(dim: int, n_classes: int, seed: int = 0) -> LinearHead:
    """The same starting head everywhere (the server's initial global model)."""
    head = LinearHead(dim, n_classes)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        nn.init.normal_(head.fc.weight, std=0.01, generator=gen)
        head.fc.bias.zero_()
    return head


def backbone(cfg: FederatedConfig) -> nn.Module:
    """The frozen backbone (built once per process; random init is seeded so all sites agree)."""
    def build() -> nn.Module:
        from dermino.models import create

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = create(cfg.backbone.model, weights=cfg.backbone.weights, **cfg.backbone.overrides)
        return model.eval().requires_grad_(False)

    return memory_tier().get_or_compute("federated.backbones", backbone_key(cfg), build)


def _client_features(cfg: FederatedConfig, client: ClientData) -> np.ndarray:
    """Features of every row of ``client`` (preloaded, or from the embedding cache when possible)."""
    bank = memory_tier().bank("federated.features", features_key(cfg))
    images = client.frame["image"].astype(str).tolist()
    if bank and all(i in bank for i in images):
        return np.stack([bank[i] for i in images])
    emb = extract_embeddings(backbone(cfg), client.frame, cfg.embed, weights=cfg.backbone.weights,
                             model_name=cfg.backbone.model, progress=cfg.progress)
    return emb.features


def proximal_term(params, anchor, mu: float) -> torch.Tensor:
    """FedProx's (mu/2)·||w - w_global||², summed over all parameters."""
    return mu / 2 * sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))


def train_head(
    head: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, lr: float, batch_size: int,
    weight_decay: float = 0.0, proximal_mu: float = 0.0, seed: int = 0,
) -> float:
    """Adam on cross-entropy over the parameters that require grad (a head, or whatever else trains:
    see ``trainable.py``); with ``proximal_mu`` > 0 adds FedProx's (mu/2)·||w - w_global||² over them.

    Returns the mean training loss of the last epoch.
    """
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.long)
    params = [p for p in head.parameters() if p.requires_grad]
    anchor = [p.detach().clone() for p in params] if proximal_mu > 0 else []
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    last = math.nan
    for _ in range(epochs):
        order = torch.randperm(len(xt), generator=gen)
        total, seen = 0.0, 0
        for start in range(0, len(xt), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(head(xt[idx]), yt[idx])
            if anchor:
                loss = loss + proximal_term(params, anchor, proximal_mu)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, seen = total + loss.item() * len(idx), seen + len(idx)
        last = total / max(seen, 1)
    head.eval()
    return last


@torch.inference_mode()
def predict_proba(head: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    head.eval()
    xt = torch.as_tensor(x, dtype=torch.float32)
    out = [torch.softmax(head(xt[i:i + batch_size]), dim=1) for i in range(0, len(xt), batch_size)]
    return (torch.cat(out) if out else torch.zeros(0)).double().numpy()


def evaluate_head(head: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Loss, macro AUROC and macro F1 over the classes present in ``y`` (NaN when undefined)."""
    probs = predict_proba(head, x)
    present = [int(c) for c in np.unique(y)]
    loss = float(nn.functional.nll_loss(torch.log(torch.as_tensor(probs).clamp_min(1e-12)),
                                        torch.as_tensor(y, dtype=torch.long)))
    auroc = macro_auroc(y, probs, present) if len(present) > 1 else math.nan
    return {"loss": loss, "auroc": auroc, "f1": macro_f1(y, probs.argmax(1), present)}


def state_to_numpy(head: nn.Module) -> OrderedDict[str, np.ndarray]:
    return OrderedDict((k, v.detach().cpu().numpy().copy()) for k, v in head.state_dict().items())


def _load_arrays(head: nn.Module, arrays: dict[str, np.ndarray]) -> nn.Module:
    """Load named arrays, checking names and shapes (a wrong model is an error, not a silent mix)."""
    state = head.state_dict()
    if set(arrays) != set(state):
        raise ValueError(f"parameters {sorted(arrays)} do not match the model's {sorted(state)}")
    for k, v in arrays.items():
        if tuple(np.shape(v)) != tuple(state[k].shape):
            raise ValueError(f"parameter {k}: shape {np.shape(v)} != model {tuple(state[k].shape)}")
    head.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in arrays.items()})
    return head


# ---------------------------------------------------------------- deprecated names
# One API for what a site trains on and loads: dermino.federated.trainable's preload_inputs,
# site_inputs and load_trainable (they cover the head and every other trainable mode).
def _deprecated(old: str, new: str, fn):
    def wrapper(*args, **kwargs):
        warnings.warn(f"dermino.federated.task.{old} is deprecated: use dermino.federated.trainable.{new}",
                      DeprecationWarning, stacklevel=2)
        return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = old, f"Deprecated: use ``dermino.federated.trainable.{new}``."
    return wrapper


preload_features = _deprecated("preload_features", "preload_inputs", _preload_features)
client_features = _deprecated("client_features", "site_inputs", _client_features)
load_numpy = _deprecated("load_numpy", "load_trainable", _load_arrays)
