"""Student and EMA teacher of DermINO's hybrid pretraining, and the loss of one batch.

The student (backbone + DINO head + iBOT head + knowledge head) sees the masked global
crops and the local crops; the teacher (same backbone and heads, no knowledge head) sees
the unmasked global crops, gets no gradient and follows the student by EMA. Each loss term
(DINO Eq. 1-3, iBOT Eq. 4, KoLeo, knowledge Eq. 6) is switched and weighted by the config,
so an ablation row is a config override.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dermino.losses import (
    CenteringSoftmax,
    dino_loss_terms,
    ibot_loss,
    knowledge_loss,
    koleo_loss,
    masked_patch_weights,
    sinkhorn_knopp,
)
from dermino.losses.gram import gram_loss, resize_patch_grid
from dermino.models import create
from dermino.models.heads import build_heads
from dermino.models.knowledge_heads import build_knowledge_head
from dermino.pretrain.config import LossesConfig, ModelConfig

TERMS = ("dino_global", "dino_local", "ibot", "koleo", "knowledge", "gram")


def build_backbone(cfg: ModelConfig, img_size: int) -> nn.Module:
    """The student backbone from the registry, with the config's architecture overrides."""
    overrides: dict[str, Any] = {
        "img_size": img_size,
        "drop_path_rate": cfg.drop_path_rate,
        "num_register_tokens": cfg.num_register_tokens,
        "layerscale_init": cfg.layerscale_init,
    }
    for name in ("depth", "embed_dim", "num_heads"):
        if getattr(cfg, name) is not None:
            overrides[name] = getattr(cfg, name)
    return create(cfg.arch, weights=cfg.init_path, **overrides)


class Branch(nn.Module):
    """Backbone + heads; ``forward`` runs everything one side needs (so DDP sees one call)."""

    def __init__(
        self,
        backbone: nn.Module,
        dino_head: nn.Module | None,
        ibot_head: nn.Module | None,
        knowledge_head: nn.Module | None = None,
    ):
        super().__init__()
        self.backbone = backbone
        self.dino_head = dino_head
        self.ibot_head = ibot_head
        self.knowledge_head = knowledge_head
        self.pack_crops = False  # run.pack_crops: global and local crops in one packed forward
        self.return_patches = False  # Gram anchoring: also return the global crops' patch tokens

    def forward(
        self,
        global_crops: Tensor,
        local_crops: Tensor | None = None,
        masks: Tensor | None = None,
        flat_index: Tensor | None = None,
    ) -> dict[str, Tensor]:
        local = None
        if self.pack_crops and local_crops is not None and self.dino_head is not None:
            feats, local = self.backbone.forward_features_packed([(global_crops, masks), (local_crops, None)])
        else:
            feats = self.backbone.forward_features(global_crops, masks=masks)
        out = {"cls_global": feats["cls"]}
        if self.return_patches:
            out["patch_global"] = feats["patch"]
        if self.dino_head is not None:
            out["dino_global"] = self.dino_head(feats["cls"])
            if local_crops is not None:
                if local is None:
                    local = self.backbone.forward_features(local_crops)
                out["dino_local"] = self.dino_head(local["cls"])
        if self.ibot_head is not None and flat_index is not None:
            out["ibot"] = self.ibot_head(feats["patch"].flatten(0, 1)[flat_index])
        if self.knowledge_head is not None:
            out["knowledge"] = self.knowledge_head(feats["cls"])
        return out


@dataclass
class StepOutput:
    loss: Tensor
    terms: dict[str, Tensor]
    teacher_logits: dict[str, Tensor] = field(default_factory=dict)  # for a deferred centering update


class StudentTeacher(nn.Module):
    """Holds both branches and the teacher-target normalisers; computes the weighted loss."""

    def __init__(
        self,
        model_cfg: ModelConfig,
        losses: LossesConfig,
        img_size: int,
        prototypes: Tensor | None = None,
        class_prior: Tensor | None = None,
    ):
        super().__init__()
        self.losses = losses
        backbone = build_backbone(model_cfg, img_size)
        dino_head, ibot_head = build_heads(backbone.embed_dim, model_cfg.heads)
        knowledge_head = None
        if losses.knowledge.enabled:
            if prototypes is None:
                raise ValueError("losses.knowledge.enabled=true needs prototypes")
            k = losses.knowledge
            knowledge_head = build_knowledge_head(
                k.head, prototypes, backbone.embed_dim, class_prior=class_prior, trainable=k.trainable,
                learnable_scale=k.learnable_scale, init_scale=k.init_scale, init_temperature=k.init_temperature,
            )
        self.student = Branch(
            backbone,
            dino_head if losses.dino.enabled else None,
            ibot_head if losses.ibot.enabled else None,
            knowledge_head,
        )
        self.teacher = Branch(
            copy.deepcopy(backbone),
            copy.deepcopy(self.student.dino_head),
            copy.deepcopy(self.student.ibot_head),
        )
        self.teacher.requires_grad_(False)
        self.teacher.eval()
        self.gram_teacher: nn.Module | None = None
        if losses.gram.enabled:  # frozen patch-similarity anchor; in the checkpoint, so resume is exact
            self.gram_teacher = copy.deepcopy(self.teacher.backbone).requires_grad_(False).eval()
            self.student.return_patches = True
        if losses.dino.normalisation not in ("sinkhorn", "centering"):
            raise ValueError(f"losses.dino.normalisation must be sinkhorn or centering, got {losses.dino.normalisation!r}")
        self.dino_center = CenteringSoftmax(momentum=losses.dino.center_momentum)
        self.ibot_center = CenteringSoftmax(momentum=losses.dino.center_momentum)
        if not any(t.enabled for t in (losses.dino, losses.ibot, losses.koleo, losses.knowledge, losses.gram)):
            raise ValueError("every loss term is disabled: nothing to train")

    def train(self, mode: bool = True) -> StudentTeacher:
        super().train(mode)
        self.teacher.eval()  # the teacher never drops paths
        if self.gram_teacher is not None:
            self.gram_teacher.eval()
        return self

    @torch.no_grad()
    def refresh_gram_teacher(self) -> None:
        """Gram teacher <- the EMA teacher's backbone (``losses.gram.refresh_every``)."""
        assert self.gram_teacher is not None
        for g, t in zip(self.gram_teacher.parameters(), self.teacher.backbone.parameters(), strict=True):
            g.copy_(t)

    @torch.no_grad()
    def _gram_targets(self, global_crops: Tensor, grid: int) -> Tensor:
        """The Gram teacher's patch features of the global crops, on the student's ``grid x grid``."""
        assert self.gram_teacher is not None
        size = self.losses.gram.target_size
        x = global_crops
        if size and size != x.shape[-1]:  # high-resolution targets
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        return resize_patch_grid(self.gram_teacher.forward_features(x)["patch"], (grid, grid))

    # ------------------------------------------------------------------ EMA

    def teacher_student_pairs(self, backbone: bool = True) -> tuple[list[Tensor], list[Tensor]]:
        """Matching (teacher, student) parameters, by name (the teacher has no knowledge head);
        ``backbone=False``: the heads only."""
        s = dict(self.student.named_parameters())
        pairs = [(p, s[n]) for n, p in self.teacher.named_parameters() if backbone or not n.startswith("backbone.")]
        return [t for t, _ in pairs], [q for _, q in pairs]

    @torch.no_grad()
    def update_teacher(self, momentum: float, backbone: bool = True) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student (heads only with ``backbone=False``)."""
        t, s = self.teacher_student_pairs(backbone)
        torch._foreach_mul_(t, momentum)
        torch._foreach_add_(t, [p.detach() for p in s], alpha=1.0 - momentum)

    # ------------------------------------------------------------------ loss

    def _targets(self, logits: Tensor, temp: float, center: CenteringSoftmax) -> Tensor:
        if self.losses.dino.normalisation == "sinkhorn":
            return sinkhorn_knopp(logits, temp, self.losses.dino.sinkhorn_iterations)
        return center(logits, temp)

    def update_centers(self, teacher_logits: dict[str, Tensor]) -> None:
        """Classic centering: move the EMA centres (call only after the step is known good)."""
        if self.losses.dino.normalisation != "centering":
            return
        if "dino" in teacher_logits:
            self.dino_center.update(teacher_logits["dino"])
        if "ibot" in teacher_logits and len(teacher_logits["ibot"]):
            self.ibot_center.update(teacher_logits["ibot"])

    def compute_loss(
        self, batch: dict[str, Any], teacher_temp: float, student: nn.Module | None = None, gram: bool = True,
    ) -> StepOutput:
        """Weighted sum of the enabled terms for one collated batch.

        ``student`` is the (possibly DDP-wrapped) student branch to call; default the bare one.
        ``gram``: whether the Gram term counts at this step (``losses.gram.start_step``).
        """
        student = self.student if student is None else student  # (a compiled module has no truth value)
        cfg = self.losses
        g, masks = batch["global_crops"], batch["masks"]
        n_global = int(batch["n_global"])
        b = g.shape[0] // n_global
        use_ibot = cfg.ibot.enabled
        if use_ibot and "mask_index" in batch:  # computed on the host before the copy (fast step): no sync
            weights, flat_index = batch["mask_weights"], batch["mask_index"]
        else:
            weights, flat_index = masked_patch_weights(masks) if use_ibot else (None, None)
        s = student(
            g,
            batch["local_crops"] if cfg.dino.enabled else None,
            masks if use_ibot else None,
            flat_index,
        )
        with torch.no_grad():
            t = self.teacher(g, None, None, flat_index)
        zero = s["cls_global"].sum() * 0.0
        terms = dict.fromkeys(TERMS, zero)
        teacher_logits: dict[str, Tensor] = {}
        if cfg.dino.enabled:
            t_logits = t["dino_global"].float()
            teacher_logits["dino"] = t_logits
            probs = self._targets(t_logits, teacher_temp, self.dino_center).chunk(n_global)
            student_views = list(s["dino_global"].chunk(n_global))
            if "dino_local" in s:
                student_views += list(s["dino_local"].chunk(s["dino_local"].shape[0] // b))
            d = dino_loss_terms(student_views, list(probs), cfg.dino.student_temp)
            terms["dino_global"], terms["dino_local"] = d["global"], d["local"]
        if use_ibot:
            t_logits = t["ibot"].float()
            teacher_logits["ibot"] = t_logits
            probs = self._targets(t_logits, teacher_temp, self.ibot_center)
            terms["ibot"] = ibot_loss(s["ibot"], probs, weights, n_images=g.shape[0], student_temperature=cfg.dino.student_temp)
        if cfg.koleo.enabled:
            terms["koleo"] = sum(koleo_loss(c) for c in s["cls_global"].chunk(n_global))
        if cfg.knowledge.enabled:
            targets = batch["targets"].repeat(n_global, 1)
            mask = batch["label_mask"].repeat(n_global, 1)
            terms["knowledge"] = knowledge_loss(s["knowledge"].float(), targets, mask)
            if cfg.knowledge.anchor_weight > 0:
                head = self.student.knowledge_head
                assert head is not None
                terms["knowledge"] = terms["knowledge"] + cfg.knowledge.anchor_weight * head.anchor_penalty()
        if cfg.gram.enabled and gram:
            patches = s["patch_global"]
            grid = int(round(patches.shape[1] ** 0.5))
            terms["gram"] = gram_loss(patches, self._gram_targets(g, grid), cfg.gram.remove_negatives)
        w = {
            "dino_global": cfg.dino.weight,
            "dino_local": cfg.dino.weight,
            "ibot": cfg.ibot.weight,
            "koleo": cfg.koleo.weight,
            "knowledge": cfg.knowledge.weight,
            "gram": cfg.gram.weight,
        }
        loss = sum(w[k] * terms[k] for k in TERMS)
        return StepOutput(loss=loss, terms=terms, teacher_logits=teacher_logits)


def param_groups(student: Branch, weight_decay_free: tuple[str, ...] = ("pos_embed", "cls_token", "mask_token", "reg_token"),
                 patch_embed_lr_mult: float = 0.2, layerwise_decay: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups with ``lr_mult``/``wd_mult``/``last_layer`` tags (the trainer scales per step).

    No weight decay on biases, norms, scalars and tokens; patch-embed lr x ``patch_embed_lr_mult``;
    layer-wise decay gives block i the multiplier ``decay ** (depth + 1 - (i + 1))``.
    """
    depth = len(student.backbone.vit.blocks)
    groups: dict[tuple[float, float, bool], list[nn.Parameter]] = {}
    for name, p in student.named_parameters():
        if not p.requires_grad:
            continue
        no_wd = p.ndim <= 1 or name.endswith(".bias") or any(k in name for k in weight_decay_free)
        layer = depth + 1
        if name.startswith("backbone."):
            if ".blocks." in name:
                layer = int(name.split(".blocks.")[1].split(".")[0]) + 1
            elif "patch_embed" in name or any(k in name for k in weight_decay_free):
                layer = 0
        lr_mult = layerwise_decay ** (depth + 1 - layer)
        if "patch_embed" in name:
            lr_mult *= patch_embed_lr_mult
        last = ".last_layer." in f".{name}"
        groups.setdefault((lr_mult, 0.0 if no_wd else 1.0, last), []).append(p)
    return [
        {"params": ps, "lr_mult": lr, "wd_mult": wd, "last_layer": last}
        for (lr, wd, last), ps in groups.items()
    ]
