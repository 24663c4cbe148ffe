"""Knowledge-head parametrisations: how an image's CLS embedding is scored against disease prototypes.

Three heads, one switch (``losses.knowledge.head``):

- ``projection``: the original dermino head, ``scale * Linear(cls) @ W^T``. The free Linear
  between image and text makes ``Linear @ W^T`` any linear classifier, so the text geometry of
  W constrains nothing; kept for comparison with older runs.
- ``eq5``: the paper's Eq. 5, ``Sigmoid(X W^T)`` with no learned map on the image side. W is
  moved into the backbone's width by a *fixed* map P (``fixed_text_map``) that preserves the
  prototypes' pairwise cosines exactly, so related diseases stay related.
- ``siglip``: sigmoid image-text matching (SigLIP): cosine of the L2-normalised CLS and the
  (fixed-mapped) prototypes, a learnable temperature and a learnable per-class bias. The bias
  is initialised on the first batch so that the first predictions are each class's frequency:
  the loss starts at the class-prior level instead of above it.

Every head exposes the same small interface for diagnostics and zero-shot diagnosis:
``image_embedding(cls)``, ``prototype_embedding()`` (W in that space), ``map_text(emb)`` (any
text embeddings into that space, for names never seen in training) and ``score(cls, protos)``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

HEADS = ("projection", "eq5", "siglip")


def fixed_text_map(prototypes: Tensor, dim: int, seed: int = 0) -> Tensor:
    """A fixed (D, E) map P with ``W P^T`` preserving the rows' pairwise inner products.

    E <= D: P has orthonormal columns (an isometric embedding of the whole text space), so the
    inner products of *any* text embeddings are preserved. E > D: the first r = rank(W) rows
    of P span W's rows (PCA of W, exact for W when r <= D, the best rank-D fit otherwise); the
    remaining D - r rows are random orthonormal directions of the complement, so names never
    seen in training keep their component along W and a random slice of the rest.
    """
    if prototypes.ndim != 2:
        raise ValueError(f"prototypes must be (C, E), got shape {tuple(prototypes.shape)}")
    w = prototypes.detach().double().cpu()
    e = w.shape[1]
    g = torch.Generator().manual_seed(seed)
    if e <= dim:
        q, _ = torch.linalg.qr(torch.randn(dim, e, generator=g, dtype=torch.float64))
        return q.float()  # (D, E), Q^T Q = I
    _, s, vh = torch.linalg.svd(w, full_matrices=True)  # vh: (E, E), rows = principal directions
    r = min(int((s > s.max() * 1e-6).sum()) if len(s) else 0, dim)
    rows = [vh[:r]]
    if dim > r:  # random orthonormal directions orthogonal to W's span
        rest = vh[r:]  # (E - r, E) orthonormal complement
        q, _ = torch.linalg.qr(torch.randn(rest.shape[0], dim - r, generator=g, dtype=torch.float64))
        rows.append(q.t() @ rest)
    return torch.cat(rows).float()  # (D, E), orthonormal rows


class _Head(nn.Module):
    """Shared plumbing: W (frozen buffer or Parameter) with an optional pull towards W_init."""

    weight: Tensor
    weight_init: Tensor
    kind = ""

    def _init_weight(self, w: Tensor, trainable: bool) -> None:
        w = w.detach().clone().float()
        self.register_buffer("weight_init", w.clone(), persistent=False)  # rebuilt from the prototypes
        if trainable:
            self.weight = nn.Parameter(w)
        else:
            self.register_buffer("weight", w)
        self.num_classes = w.shape[0]

    # log scale / temperature are stored as shape (1,), not 0-d: FSDP2 cannot shard a scalar parameter
    _ONE_ELEMENT = ("log_scale", "log_temperature")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        for name in self._ONE_ELEMENT:  # files written with the earlier 0-d form still load
            key = prefix + name
            if key in state_dict and state_dict[key].ndim == 0:
                state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def anchor_penalty(self) -> Tensor:
        """Mean squared distance of W's rows to W_init (0 when W is frozen)."""
        if not isinstance(self.weight, nn.Parameter):
            return self.weight.sum() * 0.0
        return (self.weight - self.weight_init).pow(2).sum(1).mean()

    def prototype_embedding(self) -> Tensor:
        return self.weight

    def image_embedding(self, cls: Tensor) -> Tensor:
        return cls

    def map_text(self, text: Tensor) -> Tensor:
        """Text embeddings (K, E) of any names -> prototypes in this head's space."""
        return text

    def score(self, cls: Tensor, protos: Tensor) -> Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, cls: Tensor) -> Tensor:
        return self.score(cls, self.prototype_embedding())

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_classes": self.num_classes, "trainable": isinstance(self.weight, nn.Parameter)}


class ProjectionHead(_Head):
    """logits = scale * Linear(cls) @ W^T (identity instead of Linear when widths match)."""

    kind = "projection"

    def __init__(self, prototypes: Tensor, in_dim: int, trainable: bool = False,
                 learnable_scale: bool = False, init_scale: float = 1.0):
        super().__init__()
        if prototypes.ndim != 2:
            raise ValueError(f"prototypes must be (C, E), got shape {tuple(prototypes.shape)}")
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        emb_dim = prototypes.shape[1]
        self.proj: nn.Module = nn.Identity() if in_dim == emb_dim else nn.Linear(in_dim, emb_dim)
        self._init_weight(prototypes, trainable)
        log_scale = torch.tensor([math.log(init_scale)])
        if learnable_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def scale(self) -> Tensor:
        return self.log_scale.exp()

    def image_embedding(self, cls: Tensor) -> Tensor:
        return self.proj(cls)

    def score(self, cls: Tensor, protos: Tensor) -> Tensor:
        return self.scale * self.proj(cls) @ protos.t()


class Eq5Head(_Head):
    """Paper Eq. 5: logits = scale * cls @ (W P^T)^T, P fixed (``fixed_text_map``), no image-side map."""

    kind = "eq5"
    text_map: Tensor

    def __init__(self, prototypes: Tensor, in_dim: int, trainable: bool = False,
                 learnable_scale: bool = False, init_scale: float = 1.0, seed: int = 0):
        super().__init__()
        if init_scale <= 0:
            raise ValueError(f"init_scale must be > 0, got {init_scale}")
        self.register_buffer("text_map", fixed_text_map(prototypes, in_dim, seed))
        self._init_weight(prototypes.float() @ self.text_map.t(), trainable)
        log_scale = torch.tensor([math.log(init_scale)])
        if learnable_scale:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    def map_text(self, text: Tensor) -> Tensor:
        return text.to(self.text_map) @ self.text_map.t()

    def score(self, cls: Tensor, protos: Tensor) -> Tensor:
        return self.log_scale.exp() * cls @ protos.t()


class SigmoidMatchHead(_Head):
    """SigLIP-style: logits = t * cos(cls, w_c) + b_c; t = exp(log_t) and b learnable.

    ``class_prior`` (C,) gives b_c = logit(p_c); on the first training forward the bias is
    shifted by ``-t * mean cos_c`` of that batch (averaged over ranks), so the first predictions
    are the class frequencies and the loss starts at the class-prior level.
    """

    kind = "siglip"
    text_map: Tensor
    pending_init: Tensor

    def __init__(self, prototypes: Tensor, in_dim: int, class_prior: Tensor | None = None,
                 trainable: bool = False, init_temperature: float = 10.0, learnable_temperature: bool = True,
                 seed: int = 0):
        super().__init__()
        if init_temperature <= 0:
            raise ValueError(f"init_temperature must be > 0, got {init_temperature}")
        self.register_buffer("text_map", fixed_text_map(prototypes, in_dim, seed))
        self._init_weight(prototypes.float() @ self.text_map.t(), trainable)
        c = self.num_classes
        prior = torch.full((c,), 0.5) if class_prior is None else class_prior.detach().float().cpu()
        if prior.shape != (c,):
            raise ValueError(f"class_prior must have {c} entries, got shape {tuple(prior.shape)}")
        self.bias = nn.Parameter(torch.logit(prior.clamp(1e-4, 1 - 1e-4)))
        log_t = torch.tensor([math.log(init_temperature)])
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)
        self.register_buffer("pending_init", torch.tensor(class_prior is not None))
        # the first batch's shift of the bias, kept apart from the parameter: a buffer is replicated
        # under DDP and FSDP alike, while an in-place change of an FSDP parameter inside forward is lost
        self.register_buffer("bias_shift", torch.zeros(c))
        self._pending: bool | None = None  # host copy of pending_init: reading the buffer syncs a GPU

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._pending = None  # a loaded pending_init is read again on the next training forward

    def _init_pending(self) -> bool:
        """Whether the bias still waits for its first batch; read from the device once, then cached,
        so the training step stays free of host-device syncs after the first batch."""
        if self._pending is None:
            self._pending = bool(self.pending_init)
        return self._pending

    @property
    def temperature(self) -> Tensor:
        return self.log_temperature.exp()

    def image_embedding(self, cls: Tensor) -> Tensor:
        return F.normalize(cls, dim=-1)

    def prototype_embedding(self) -> Tensor:
        return F.normalize(self.weight, dim=-1)

    def map_text(self, text: Tensor) -> Tensor:
        return F.normalize(text.to(self.text_map) @ self.text_map.t(), dim=-1)

    def cosines(self, cls: Tensor, protos: Tensor) -> Tensor:
        return F.normalize(cls, dim=-1) @ F.normalize(protos, dim=-1).t()

    def score(self, cls: Tensor, protos: Tensor) -> Tensor:
        """Temperature-scaled cosines, no bias (monotone per class: what AUROC and zero-shot need)."""
        return self.temperature * self.cosines(cls, protos)

    def forward(self, cls: Tensor) -> Tensor:
        cos = self.cosines(cls, self.weight)
        if self.training and self._init_pending():
            self._init_bias(cos.detach().float())
        return self.temperature * cos + (self.bias - self.bias_shift)

    @torch.no_grad()
    def _init_bias(self, cos: Tensor) -> None:
        shift = self.temperature.detach() * cos.mean(0)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(shift)
            shift /= dist.get_world_size()
        if not bool(torch.isfinite(shift).all()):  # a poisoned batch (the step is skipped): wait for a good one
            return
        self.bias_shift.copy_(shift.to(self.bias_shift))
        self.pending_init.fill_(False)
        self._pending = False


def build_knowledge_head(kind: str, prototypes: Tensor, in_dim: int, *, class_prior: Tensor | None = None,
                         trainable: bool = False, learnable_scale: bool = False, init_scale: float = 1.0,
                         init_temperature: float = 10.0, seed: int = 0) -> _Head:
    """The head named ``kind`` (one of ``HEADS``)."""
    if kind == "projection":
        return ProjectionHead(prototypes, in_dim, trainable, learnable_scale, init_scale)
    if kind == "eq5":
        return Eq5Head(prototypes, in_dim, trainable, learnable_scale, init_scale, seed)
    if kind == "siglip":
        return SigmoidMatchHead(prototypes, in_dim, class_prior, trainable, init_temperature,
                                learnable_temperature=True, seed=seed)
    raise ValueError(f"losses.knowledge.head must be one of {list(HEADS)}, got {kind!r}")


def class_frequencies(targets: Tensor, label_space_mask: Tensor) -> Tensor:
    """(C,) frequency of each class among the rows whose label space contains it (0.5 if none)."""
    t, m = targets.double(), label_space_mask.double()
    n = m.sum(0)
    freq = (t * m).sum(0) / n.clamp(min=1)
    return torch.where(n > 0, freq, torch.full_like(freq, 0.5)).float()


HEAD_FILE = "knowledge_head.safetensors"


def save_head(head: _Head, path: str | Path, text_prototypes: Tensor, meta: dict[str, Any]) -> Path:
    """The trained head as safetensors (tensors) + JSON metadata in the file: data, never code.

    ``text_prototypes`` (C, E) are the text embeddings W was built from (what a random-init head
    of the same design starts from); ``meta`` carries the class names, encoder and pooling, so
    ``dermino zero-shot`` can embed new disease names the same way.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}
    tensors["text_prototypes"] = text_prototypes.detach().float().cpu().contiguous()
    in_dim = int(head.text_map.shape[0]) if hasattr(head, "text_map") else _projection_in_dim(head)
    info = {**head.describe(), **meta, "in_dim": in_dim, "format": "dermino.knowledge_head/1"}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={"head": json.dumps(info)})
    tmp.replace(path)
    return path


def _projection_in_dim(head: _Head) -> int:
    proj = getattr(head, "proj", None)
    return int(proj.in_features) if isinstance(proj, nn.Linear) else int(head.weight.shape[1])


def load_head(path: str | Path, initial: bool = False, seed: int = 0) -> tuple[_Head, dict[str, Any]]:
    """(head, metadata) from ``save_head``'s file; ``initial=True`` gives the same design at
    initialisation (the fixed text map and W_init, a fresh projection): the zero-shot baseline."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"knowledge head file not found: {path}")
    with safe_open(str(path), framework="pt") as f:
        raw = (f.metadata() or {}).get("head")
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not iterable
    if raw is None or "text_prototypes" not in tensors:
        raise ValueError(f"{path}: not a dermino knowledge head file (no 'head' metadata / text_prototypes)")
    info = json.loads(raw)
    text = tensors.pop("text_prototypes")
    kind = info["kind"]
    torch.manual_seed(seed)
    head = build_knowledge_head(kind, text, int(info["in_dim"]), trainable=bool(info.get("trainable")), seed=seed)
    if "text_map" in tensors:  # the run's own fixed map (same seed, but never recompute what was stored)
        head.text_map.copy_(tensors["text_map"])
        if initial:
            head.weight.data.copy_(text.float() @ head.text_map.t())
    if not initial:
        missing, unexpected = head.load_state_dict(tensors, strict=False)
        if unexpected or [m for m in missing if m != "weight_init"]:
            raise ValueError(f"{path}: tensors do not fit a {kind} head (missing {missing}, unexpected {unexpected})")
    head.eval()
    return head, info
