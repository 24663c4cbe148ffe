"""The pieces of a pretraining run, each built by one function from the config.

``Trainer`` calls them in this order (the order fixes how the global RNG is consumed, so a
seeded run is reproducible): data, budget, model, optimizer, schedules, cost. Each can be built
and tested alone.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from dermino.data.cache import open_for_rows
from dermino.data.datasets import MultiCropCollate, PretrainDataset, ResumableSampler, source_row_weights
from dermino.data.dedup import check_overlap
from dermino.data.images import read_rgb
from dermino.data.manifest import read_manifest, resolve
from dermino.data.photometric import multicrop_transform
from dermino.data.transforms import CropsConfig
from dermino.losses.knowledge import class_prior_floor
from dermino.models.knowledge_heads import class_frequencies
from dermino.pretrain.config import PretrainConfig
from dermino.pretrain.distributed import DistInfo, barrier, shard_branches, wrap_model
from dermino.pretrain.fast_step import make_adamw, set_activation_checkpointing, use_sdpa
from dermino.pretrain.flops import pretrain_flops_per_image
from dermino.pretrain.knowledge_setup import knowledge_inputs
from dermino.pretrain.model import StudentTeacher, param_groups
from dermino.pretrain.schedules import cosine_schedule, scaled_lr, warmup_then_constant
from dermino.pretrain.state import Schedules
from dermino.pretrain.warmup import HeadWarmup, head_warmup_steps, prepend, warmup_lr

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- data
def load_pretrain_manifest(cfg: PretrainConfig, out_dir: Path) -> pd.DataFrame:
    """All configured manifests, rows of the configured splits, image paths made absolute."""
    frames = []
    for entry in cfg.data.manifests:
        if entry == "sample":
            from dermino.data.sample import SAMPLE_DATASETS, sample_manifests

            # rank 0 writes them (concurrent writers would race on the same temp files)
            if not dist.is_initialized() or dist.get_rank() == 0:
                sample_manifests(out_dir / "manifests", seed=cfg.run.seed)
            barrier()
            paths = [out_dir / "manifests" / f"{name}.csv" for name in SAMPLE_DATASETS]
        else:
            paths = [Path(entry)]
        for path in paths:
            df = read_manifest(path)
            df["image"] = [str(resolve(df, v)) for v in df["image"]]
            frames.append(df)
    if not frames:
        raise ValueError("data.manifests is empty")
    df = pd.concat(frames, ignore_index=True)
    if cfg.data.splits and "split" in df.columns:
        df = df[df["split"].isin(cfg.data.splits)].reset_index(drop=True)
    if len(df) == 0:
        raise ValueError(f"no manifest rows in splits {cfg.data.splits} of {cfg.data.manifests}")
    df.attrs["root"] = "/"
    check_overlap(df, cfg.data.exclude_overlap_with, cfg.data.overlap_policy)
    return df


def check_global_batch(cfg: PretrainConfig, world: int) -> None:
    """``schedule.global_batch``, when set, must be what the processes and accumulation give."""
    sc = cfg.schedule
    got = sc.batch_size * world * max(1, sc.grad_accum)
    if sc.global_batch is not None and sc.global_batch != got:  # before any data is read
        raise ValueError(
            f"schedule.global_batch={sc.global_batch} but batch_size {sc.batch_size} x {world} "
            f"process(es) x grad_accum {sc.grad_accum} = {got}: set schedule.grad_accum (or batch_size) to match"
        )


@dataclass
class DataParts:
    df: pd.DataFrame
    dataset: PretrainDataset
    sampler: ResumableSampler
    loader: torch.utils.data.DataLoader
    micro_batch: int  # images per process per micro-step
    accum: int  # micro-steps per optimizer step
    global_batch: int  # images per optimizer step, all processes
    epoch_size: int
    classes: list[str] = field(default_factory=list)  # the knowledge head's classes ([] when off)
    prototypes: torch.Tensor | None = None  # text prototypes W (knowledge loss on)
    class_prior: torch.Tensor | None = None
    knowledge_summary: dict[str, Any] = field(default_factory=dict)


def build_data(cfg: PretrainConfig, dist_info: DistInfo, out_dir: Path, df: pd.DataFrame | None = None) -> DataParts:
    """Manifest rows, knowledge targets, the multi-crop dataset and its resumable sampler and loader."""
    df = df if df is not None else load_pretrain_manifest(cfg, out_dir)
    crops, k = cfg.crops, cfg.losses.knowledge
    classes: list[str] = []
    prototypes = class_prior = targets = mask = None
    summary: dict[str, Any] = {}
    if k.enabled:
        classes, targets, mask, prototypes = knowledge_inputs(df, k, cfg.run.seed, out_dir if dist_info.is_main else None)
        class_prior = class_frequencies(targets, mask)
        summary = {
            "classes": classes,
            "rows": len(df),
            "labelled_rows": int((mask.sum(1) > 0).sum()),
            "class_prior_floor": class_prior_floor(targets, mask),
        }
        log.info("knowledge loss to beat: %.4f (an image-blind predictor of each class's frequency)",
                 summary["class_prior_floor"])
    reader = open_for_rows(cfg.data.cache, df["image"].tolist(), "pretraining") if cfg.data.cache else read_rgb
    dataset = PretrainDataset(
        df, multicrop_transform(crops), targets, mask, on_bad_image=cfg.data.on_bad_image,  # type: ignore[arg-type]
        reader=reader,
    )
    sc, world = cfg.schedule, dist_info.world_size
    micro, accum = sc.batch_size, max(1, sc.grad_accum)
    epoch_size = cfg.data.epoch_size or len(df)
    sampler = ResumableSampler(len(df), source_row_weights(df, cfg.data.source_weights), cfg.run.seed,
                               dist_info.rank, world, epoch_size)
    if sampler.per_rank < micro:
        raise ValueError(
            f"an epoch gives each of {world} process(es) {sampler.per_rank} images, fewer than "
            f"schedule.batch_size={micro}: lower the batch size or add data"
        )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=micro,
        sampler=sampler,
        drop_last=True,
        num_workers=cfg.data.num_workers,
        collate_fn=MultiCropCollate(crops.patch_size, cfg.masking, cfg.run.seed),
        pin_memory=dist_info.device.type == "cuda",
        persistent_workers=False,
        generator=torch.Generator(),  # keeps the global RNG untouched by loader start-up
    )
    return DataParts(df, dataset, sampler, loader, micro, accum, micro * world * accum, epoch_size,
                     classes, prototypes, class_prior, summary)


# ---------------------------------------------------------------------------- budget
def build_budget(cfg: PretrainConfig, global_batch: int, epoch_size: int) -> tuple[int, int]:
    """(total optimizer steps, steps per epoch) from the image or step budget."""
    sc = cfg.schedule
    if sc.budget_steps is not None:
        total = int(sc.budget_steps)
    elif sc.budget_images is not None:
        total = max(1, math.ceil(sc.budget_images / global_batch))
    else:
        raise ValueError("set schedule.budget_images or schedule.budget_steps")
    return total, max(1, epoch_size // global_batch)


# ---------------------------------------------------------------------------- model
@dataclass
class ModelParts:
    model: StudentTeacher
    student: nn.Module  # DDP-wrapped, FSDP-sharded or plain
    student_call: nn.Module  # compiled when run.compile
    fsdp: bool
    # under FSDP, rank 0's unsharded CPU copy of the teacher backbone (monitor and export gather into it)
    teacher_template: nn.Module | None = None


def build_model(cfg: PretrainConfig, dist_info: DistInfo, prototypes: torch.Tensor | None,
                class_prior: torch.Tensor | None) -> ModelParts:
    """Student/teacher with heads, on the device, wrapped for the process group."""
    model = StudentTeacher(cfg.model, cfg.losses, cfg.crops.global_size, prototypes, class_prior).to(dist_info.device)
    use_sdpa(model)
    set_activation_checkpointing(model.student.backbone, cfg.run.activation_checkpointing)
    if cfg.run.pack_crops:
        if not hasattr(model.student.backbone, "forward_features_packed"):
            raise ValueError(f"run.pack_crops=true needs a dermino ViT backbone, got {cfg.model.arch}")
        model.student.pack_crops = True
    fsdp = bool(cfg.run.fsdp)
    template = None
    if fsdp:
        if dist_info.is_main:
            template = copy.deepcopy(model.teacher.backbone).cpu()
        shard_branches([model.student, model.teacher], dist_info)
        student: nn.Module = model.student
    else:
        student = wrap_model(model.student, dist_info)
    student_call = torch.compile(student) if cfg.run.compile else student
    return ModelParts(model, student, student_call, fsdp, template)


# ---------------------------------------------------------------------------- optimizer
@dataclass
class OptimizerParts:
    optimizer: torch.optim.Optimizer
    params: list[nn.Parameter]
    last_layer_params: list[nn.Parameter]  # frozen for the first freeze_last_layer steps
    amp_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler


def build_optimizer(cfg: PretrainConfig, model: StudentTeacher, device: torch.device) -> OptimizerParts:
    """AdamW over the student's parameter groups (lr/wd multipliers), and the precision set-up."""
    groups = param_groups(model.student, patch_embed_lr_mult=cfg.optim.patch_embed_lr_mult,
                          layerwise_decay=cfg.optim.layerwise_decay)
    params = [p for g in groups for p in g["params"]]
    last_layer = [p for g in groups if g["last_layer"] for p in g["params"]]
    optimizer = make_adamw(groups, tuple(cfg.optim.betas), device)  # type: ignore[arg-type]
    prec = cfg.run.precision
    if prec not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"run.precision must be fp32, bf16 or fp16, got {prec!r}")
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
    scaler = torch.amp.GradScaler(device.type, enabled=prec == "fp16")
    return OptimizerParts(optimizer, params, last_layer, amp_dtype, scaler)


# ---------------------------------------------------------------------------- schedules
def build_schedules(cfg: PretrainConfig, backbone: nn.Module, total_steps: int, global_batch: int,
                    epoch_size: int, steps_per_epoch: int) -> Schedules:
    """lr / wd / teacher momentum / teacher temperature per step; a head warm-up runs first."""
    warmup = HeadWarmup(backbone, head_warmup_steps(
        cfg.schedule.head_warmup_images, cfg.model.init_weights, global_batch, total_steps, epoch_size))
    w = warmup.steps
    o, n, spe = cfg.optim, total_steps - w, steps_per_epoch
    peak_lr = scaled_lr(o.base_lr, global_batch)
    lr = cosine_schedule(peak_lr, o.min_lr, n, int(o.warmup_epochs * spe))
    wd = cosine_schedule(o.weight_decay, o.weight_decay_end, n)
    momentum = cosine_schedule(o.momentum_teacher, o.momentum_teacher_end, n)
    d = cfg.losses.dino
    temp = warmup_then_constant(d.warmup_teacher_temp, d.teacher_temp, n, int(d.warmup_teacher_temp_epochs * spe))
    return Schedules(lr=prepend(w, lr, warmup_lr(peak_lr, w)), wd=prepend(w, wd), momentum=prepend(w, momentum),
                     teacher_temp=prepend(w, temp), freeze_last_layer_steps=int(o.freeze_last_layer_epochs * spe),
                     warmup=warmup)


# ---------------------------------------------------------------------------- resolution stages
def stage_at(cfg: PretrainConfig, step: int, total_steps: int) -> tuple[int, CropsConfig]:
    """(stage index, crops) for optimizer step ``step``: stage 0 is ``cfg.crops``; stage i >= 1
    starts at step ``int(stages[i-1].start * total_steps)`` with that stage's crop sizes."""
    index, crops = 0, cfg.crops
    for i, st in enumerate(cfg.schedule.stages, start=1):
        if step >= int(st.start * total_steps):
            index, crops = i, dataclasses.replace(cfg.crops, global_size=st.global_size, local_size=st.local_size)
    return index, crops


# ---------------------------------------------------------------------------- cost
def flops_per_image(cfg: PretrainConfig, backbone: nn.Module, crops: CropsConfig | None = None) -> float:
    """Analytic training FLOPs per image of the whole recipe (all crops, forward + backward)."""
    crops, heads = crops or cfg.crops, cfg.model.heads
    return pretrain_flops_per_image(
        backbone.embed_dim, len(backbone.vit.blocks), crops.global_size, crops.local_size, crops.n_local,
        patch_size=crops.patch_size, n_prefix=backbone.num_prefix_tokens,
        head=(heads.hidden_dim, heads.bottleneck_dim, heads.out_dim, heads.n_layers),
        ibot=cfg.losses.ibot.enabled,
    )
