"""What a site trains: the linear head, the last k blocks (+ final norm + head), or LoRA adapters + head.

``train.trainable`` picks the mode. The frozen part of the backbone never changes during a
federation, so each site runs it once per image (the evaluation crop, no grad) and keeps its
output in memory: for ``head`` that is the pooled feature (the evaluation suite's embedding
cache), for ``last_blocks`` the tokens entering block ``depth - k``, for ``lora`` the tokens
entering block 0 (patch + position embeddings; LoRA adapts every block). A round then runs only
the part that trains, which keeps CPU runs short.

Only the trainable tensors leave a site (:func:`trainable_state`): the head, plus the last k
blocks and the final norm, or the LoRA ``lora_A``/``lora_B`` matrices. The saved global model holds
those tensors and a reference to the frozen base (registry name, weights file and its hash,
overrides); :func:`load_full_model` rebuilds the backbone, loads the blocks or merges the adapters
into its weights (peft ``merge_and_unload``) and returns a plain backbone + head.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dermino.data.images import read_rgb
from dermino.features import (
    cache_key,
    eval_transform,
    file_hash,
    memory_tier,
    model_hash,
    pool_features,
    resolve_cache_dir,
    rows_hash,
)
from dermino.federated.config import LORA_TARGETS, TRAINABLE, FederatedConfig
from dermino.federated.partitions import ClientData
from dermino.federated.task import (
    LinearHead,
    _client_features,
    _preload_features,
    backbone,
    backbone_key,
    init_head,
)
from dermino.progress import tqdm

__all__ = ["LORA_TARGETS", "TRAINABLE", "build_model", "load_full_model", "site_inputs", "trainable_state"]


def _depth(model: nn.Module) -> int:
    blocks = getattr(getattr(model, "vit", None), "blocks", None)
    if blocks is None:
        raise ValueError(f"train.trainable=last_blocks/lora needs a dermino ViT backbone; {type(model).__name__} "
                         "has no vit.blocks (use train.trainable=head)")
    return len(blocks)


def start_block(cfg: FederatedConfig) -> int:
    """Index of the first block that trains (the frozen prefix runs blocks before it)."""
    mode = cfg.train.trainable
    if mode == "head":
        return -1  # nothing of the backbone trains: pooled features are the input
    depth = _depth(backbone(cfg))
    if mode == "lora":
        return 0
    if not 1 <= cfg.train.last_k <= depth:
        raise ValueError(f"train.last_k={cfg.train.last_k} must be in [1, {depth}] (the backbone's depth)")
    return depth - cfg.train.last_k


def feature_dim(cfg: FederatedConfig) -> int:
    """Width of the pooled feature the head reads."""
    model = backbone(cfg)
    eval_transform(model, cfg.embed)  # validates image_size against the patch size
    with torch.inference_mode():
        x = torch.zeros(1, 3, cfg.embed.image_size, cfg.embed.image_size)
        return int(pool_features(model.forward_features(x), cfg.embed.pool).shape[1])


class TailClassifier(nn.Module):
    """Tokens entering block ``start`` -> blocks ``start..`` -> final norm -> pool -> :class:`LinearHead`."""

    def __init__(self, vit: nn.Module, start: int, pool: str, head: LinearHead):
        super().__init__()
        self.blocks = nn.Sequential(*(copy.deepcopy(b) for b in vit.vit.blocks[start:]))
        self.norm = copy.deepcopy(vit.vit.norm)
        self.num_prefix_tokens = int(vit.num_prefix_tokens)
        self.pool = pool
        self.head = head

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = self.norm(self.blocks(tokens))
        return self.head(pool_features({"cls": t[:, 0], "patch": t[:, self.num_prefix_tokens:]}, self.pool))


def _lora(rank: int, alpha: float, targets: list[str]):
    from peft import LoraConfig

    bad = sorted(set(targets) - set(LORA_TARGETS))
    if bad or not targets:
        raise ValueError(f"train.lora_targets {list(targets)}: choose from {LORA_TARGETS}")
    # a regex over the blocks' linears only (never the head's `fc`); no dropout: FedAvg averages deterministic updates
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0,
                      target_modules=rf"blocks\.\d+\.(attn|mlp)\.({'|'.join(targets)})")


def lora_config(cfg: FederatedConfig):
    return _lora(cfg.train.lora_rank, cfg.train.lora_alpha, cfg.train.lora_targets)


def build_model(cfg: FederatedConfig, n_classes: int, dim: int | None = None) -> nn.Module:
    """The model a site trains, identical on every site and the server (seeded)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.train.seed)
        mode = cfg.train.trainable
        if mode == "head":
            return init_head(dim or feature_dim(cfg), n_classes, seed=cfg.train.seed)
        vit = backbone(cfg)
        start = start_block(cfg)
        head = init_head(dim or feature_dim(cfg), n_classes, seed=cfg.train.seed)
        model: nn.Module = TailClassifier(vit, start, cfg.embed.pool, head).requires_grad_(True)
        if mode == "lora":
            from peft.tuners.lora import LoraModel

            model = LoraModel(model.requires_grad_(False), lora_config(cfg), "default")
            for name, p in model.named_parameters():
                p.requires_grad_("lora_" in name or ".head." in name)
        return model


def trainable_state(model: nn.Module) -> OrderedDict[str, torch.Tensor]:
    """The tensors that train (and so the only ones a site sends), by name (a state dict for ``ArrayRecord``)."""
    return OrderedDict((k, p.detach().cpu().clone()) for k, p in model.named_parameters() if p.requires_grad)


def trainable_names(model: nn.Module) -> list[str]:
    return [k for k, p in model.named_parameters() if p.requires_grad]


def load_trainable(model: nn.Module, arrays: dict[str, np.ndarray]) -> nn.Module:
    """Load the trainable tensors, checking names and shapes (a wrong model is an error, not a silent mix)."""
    params = dict(model.named_parameters())
    wanted = trainable_names(model)
    if set(arrays) != set(wanted):
        extra, missing = sorted(set(arrays) - set(wanted)), sorted(set(wanted) - set(arrays))
        raise ValueError(f"trainable tensors do not match this model (train.trainable or backbone differ?): "
                         f"unexpected {extra[:5]}, missing {missing[:5]}")
    with torch.no_grad():
        for k, v in arrays.items():
            if tuple(np.shape(v)) != tuple(params[k].shape):
                raise ValueError(f"parameter {k}: shape {np.shape(v)} != model {tuple(params[k].shape)}")
            params[k].copy_(torch.as_tensor(np.asarray(v)))
    return model


@torch.inference_mode()
def _frozen_tokens(cfg: FederatedConfig, paths: list[str], start: int) -> np.ndarray:
    vit = backbone(cfg)
    transform = eval_transform(vit, cfg.embed)
    out = []
    bs = cfg.embed.batch_size
    for i in tqdm(range(0, len(paths), bs), desc="frozen blocks", unit="batch", disable=not cfg.progress):
        x = torch.stack([transform(read_rgb(p)) for p in paths[i:i + bs]])
        t = vit._tokens(x, None)
        for block in vit.vit.blocks[:start]:
            t = block(t)
        out.append(t.float().numpy())
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def _token_key(cfg: FederatedConfig, start: int) -> tuple:
    """Which frozen tokens: the backbone, the transform (pooling plays no part) and the first block."""
    return (*backbone_key(cfg), cfg.embed.image_size, cfg.embed.resize, cfg.embed.interpolation, start)


def _cached_tokens(cfg: FederatedConfig, paths: list[str], start: int) -> np.ndarray:
    """Frozen tokens from the disk cache (``embed.cache_dir``), computed and saved when missing.

    In real processes Flower starts a fresh ClientApp process per message, so without this a
    site would rerun the frozen blocks over its images every round.
    """
    from dermino.files import atomic_path

    vit = backbone(cfg)
    key = cache_key(model_hash(vit, cfg.backbone.weights), rows_hash([Path(p) for p in paths]),
                    eval_transform(vit, cfg.embed), f"tokens-before-block-{start}")
    path = resolve_cache_dir(cfg.embed.cache_dir) / "federated_tokens" / f"{key}.npy"
    if path.is_file():
        return np.load(path)
    tokens = _frozen_tokens(cfg, paths, start)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, tokens)
    return tokens


def preload_inputs(cfg: FederatedConfig, frame) -> int:
    """Run the frozen part once for every image of ``frame`` (a process holding many partitions)."""
    if cfg.train.trainable == "head":
        return _preload_features(cfg, frame)
    start = start_block(cfg)
    bank = memory_tier().bank("federated.tokens", _token_key(cfg, start))
    paths = [p for p in dict.fromkeys(frame["image"].astype(str)) if p not in bank]
    if paths:
        bank.update(zip(paths, _cached_tokens(cfg, paths, start), strict=True))
    return len(bank)


def site_inputs(cfg: FederatedConfig, client: ClientData) -> np.ndarray:
    """What the trainable part reads for every row of ``client``: features (head) or frozen tokens."""
    if cfg.train.trainable == "head":
        return _client_features(cfg, client)
    preload_inputs(cfg, client.frame)
    bank = memory_tier().bank("federated.tokens", _token_key(cfg, start_block(cfg)))
    return np.stack([bank[p] for p in client.frame["image"].astype(str)])


# ---------------------------------------------------------------- saved global models
def base_reference(cfg: FederatedConfig) -> dict:
    """What a saved global model needs besides its tensors to become a full model again."""
    weights = cfg.backbone.weights
    return {"trainable": cfg.train.trainable, "model": cfg.backbone.model, "weights": weights,
            "weights_sha": file_hash(weights) if weights else "", "overrides": dict(cfg.backbone.overrides),
            "start_block": start_block(cfg), "pool": cfg.embed.pool, "image_size": cfg.embed.image_size,
            "last_k": cfg.train.last_k, "lora_rank": cfg.train.lora_rank, "lora_alpha": cfg.train.lora_alpha,
            "lora_targets": list(cfg.train.lora_targets)}


class FullClassifier(nn.Module):
    """A plain backbone (adapters merged, trained blocks loaded) and its head: images -> logits."""

    def __init__(self, vit: nn.Module, head: LinearHead, pool: str):
        super().__init__()
        self.backbone, self.head, self.pool = vit, head, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(pool_features(self.backbone.forward_features(x), self.pool))


def load_full_model(path: str | Path, weights: str | None = None) -> tuple[FullClassifier, list[str], int]:
    """(model, classes, round) from ``global/round_NNN.pt`` of any trainable mode.

    The base backbone is rebuilt from the reference saved with the tensors; ``weights`` overrides
    the saved path (a model moved to another machine), its hash must match the one saved.
    """
    from dermino.files import load_torch
    from dermino.models import create

    payload = load_torch(path, what="federated global model")
    if "base" not in payload:
        raise ValueError(f"{path} has no base-backbone reference (saved by an older dermino): "
                         "read its head with dermino.federated.server_app.load_global")
    ref = payload["base"]
    weights = weights or ref["weights"]
    if weights and ref.get("weights_sha") and file_hash(weights) != ref["weights_sha"]:
        raise ValueError(f"{path}: backbone weights {weights} differ from those the federation used")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # the seeded random init every site used when no weights were given
        vit = create(ref["model"], weights=weights, **ref["overrides"])
    state = {k: v for k, v in payload["state"].items()}
    mode = ref["trainable"]
    if mode == "head":
        w = state["fc.weight"]
        head = init_head(int(w.shape[1]), int(w.shape[0]))
        head.load_state_dict(state)
        return FullClassifier(vit.eval(), head, ref["pool"]).eval(), list(payload["classes"]), int(payload["round"])
    start = int(ref["start_block"])
    prefix = "model." if mode == "lora" else ""
    w = state[f"{prefix}head.fc.weight"]
    tail = TailClassifier(vit, start, ref["pool"], init_head(int(w.shape[1]), int(w.shape[0])))
    if mode == "lora":
        from peft.tuners.lora import LoraModel

        wrapped = LoraModel(tail, _lora(int(ref["lora_rank"]), float(ref["lora_alpha"]), ref["lora_targets"]),
                            "default")
        missing = set(state) - set(dict(wrapped.named_parameters()))
        if missing:
            raise ValueError(f"{path}: tensors {sorted(missing)[:5]} do not fit the saved LoRA setting")
        with torch.no_grad():
            params = dict(wrapped.named_parameters())
            for k, v in state.items():
                params[k].copy_(v)
        tail = wrapped.merge_and_unload()
    else:
        tail.load_state_dict({**tail.state_dict(), **state})
    for i, block in enumerate(tail.blocks):
        vit.vit.blocks[start + i].load_state_dict(block.state_dict())
    vit.vit.norm.load_state_dict(tail.norm.state_dict())
    return FullClassifier(vit.eval(), tail.head, ref["pool"]).eval(), list(payload["classes"]), int(payload["round"])
