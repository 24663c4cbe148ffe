"""The pretraining loop: data stream, schedules, AMP, accumulation, EMA, guards, logging, resume.

``pretrain(cfg) -> Path`` runs a whole job (the CLI and the demo call it). ``Trainer`` holds
the pieces so tests can drive single steps. A step: set lr / wd from the schedules, run the
student and teacher on each micro-batch (DDP / FSDP sync only on the last one), check the loss and
gradient norm are finite on every rank (else skip the step, report it, and stop after
``run.max_bad_steps`` in a row), clip, step AdamW, then move the teacher by EMA.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from dermino.config import save_config, to_dict
from dermino.data.cache import open_for_rows
from dermino.data.datasets import MultiCropCollate, PretrainDataset, ResumableSampler, source_row_weights
from dermino.data.dedup import check_overlap
from dermino.data.images import read_rgb
from dermino.data.manifest import read_manifest, resolve
from dermino.data.photometric import finish_batch, multicrop_transform
from dermino.losses.knowledge import class_prior_floor
from dermino.losses.knowledge_heads import class_frequencies
from dermino.pretrain import checkpoint as ckpt
from dermino.pretrain import collapse, rescue
from dermino.pretrain.config import PretrainConfig, validate
from dermino.pretrain.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup,
    init_distributed,
    pick_device,
    shard_branches,
    wrap_model,
)
from dermino.pretrain.fast_step import (
    TrainStep,
    fast_path_blocker,
    make_adamw,
    set_activation_checkpointing,
    use_sdpa,
)
from dermino.pretrain.flops import peak_tflops, pretrain_flops_per_image
from dermino.pretrain.knowledge_monitor import COLUMNS as KNOWLEDGE_COLUMNS
from dermino.pretrain.knowledge_monitor import monitor_for
from dermino.pretrain.knowledge_setup import export_knowledge_head, knowledge_inputs
from dermino.pretrain.model import TERMS, StudentTeacher, param_groups
from dermino.pretrain.schedules import cosine_schedule, scaled_lr, warmup_then_constant
from dermino.pretrain.warmup import HeadWarmup, head_warmup_steps, prepend, warmup_lr
from dermino.progress import tqdm
from dermino.runtime import seed_everything

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "step", "epoch", "images", "loss", *TERMS, "lr", "wd", "momentum", "teacher_temp",
    "grad_norm", "images_per_s", "mfu", "skipped", *KNOWLEDGE_COLUMNS,
    "teacher_entropy", "prototypes_used", "head_warmup",
]


class BadStepsError(RuntimeError):
    """Too many consecutive non-finite steps: the run has diverged."""


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


class Trainer:
    """Builds data, model, optimizer and schedules from a config; ``fit`` runs the job."""

    def __init__(self, cfg: PretrainConfig, dist_info: DistInfo | None = None, df: pd.DataFrame | None = None):
        validate(cfg)
        self.cfg = cfg
        self.dist = dist_info or DistInfo(device=pick_device(cfg.run.device))
        self.device = self.dist.device
        sc = cfg.schedule
        got = sc.batch_size * self.dist.world_size * max(1, sc.grad_accum)
        if sc.global_batch is not None and sc.global_batch != got:  # before any data is read
            raise ValueError(
                f"schedule.global_batch={sc.global_batch} but batch_size {sc.batch_size} x {self.dist.world_size} "
                f"process(es) x grad_accum {sc.grad_accum} = {got}: set schedule.grad_accum (or batch_size) to match"
            )
        self.out_dir = Path(cfg.run.out_dir)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        crops = cfg.crops
        if crops.patch_size != 14 and "_14" in cfg.model.arch:
            raise ValueError(f"crops.patch_size={crops.patch_size} but {cfg.model.arch} uses patch 14")

        # ---- data
        self.df = df if df is not None else load_pretrain_manifest(cfg, self.out_dir)
        k = cfg.losses.knowledge
        prototypes = class_prior = None
        targets = mask = None
        self.knowledge_summary: dict[str, Any] = {}
        if k.enabled:
            self.classes, targets, mask, prototypes = knowledge_inputs(
                self.df, k, cfg.run.seed, self.out_dir if self.dist.is_main else None)
            class_prior = class_frequencies(targets, mask)
            self.text_prototypes = prototypes
            self.knowledge_summary = {
                "classes": self.classes,
                "rows": len(self.df),
                "labelled_rows": int((mask.sum(1) > 0).sum()),
                "class_prior_floor": class_prior_floor(targets, mask),
            }
            log.info("knowledge loss to beat: %.4f (an image-blind predictor of each class's frequency)",
                     self.knowledge_summary["class_prior_floor"])
        else:
            self.classes = []
        reader = open_for_rows(cfg.data.cache, self.df["image"].tolist(), "pretraining") if cfg.data.cache else read_rgb
        self.dataset = PretrainDataset(
            self.df, multicrop_transform(crops), targets, mask, on_bad_image=cfg.data.on_bad_image,  # type: ignore[arg-type]
            reader=reader,
        )
        sc = cfg.schedule
        self.world = self.dist.world_size
        self.micro_batch = sc.batch_size
        self.accum = max(1, sc.grad_accum)
        self.global_batch = sc.batch_size * self.world * self.accum
        self.epoch_size = cfg.data.epoch_size or len(self.df)
        self.sampler = ResumableSampler(
            len(self.df), source_row_weights(self.df, cfg.data.source_weights), cfg.run.seed,
            self.dist.rank, self.world, self.epoch_size,
        )
        if self.sampler.per_rank < self.micro_batch:
            raise ValueError(
                f"an epoch gives each of {self.world} process(es) {self.sampler.per_rank} images, fewer than "
                f"schedule.batch_size={self.micro_batch}: lower the batch size or add data"
            )
        self.loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=self.micro_batch,
            sampler=self.sampler,
            drop_last=True,
            num_workers=cfg.data.num_workers,
            collate_fn=MultiCropCollate(crops.patch_size, cfg.masking, cfg.run.seed),
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            generator=torch.Generator(),  # keeps the global RNG untouched by loader start-up
        )

        # ---- budget
        if sc.budget_steps is not None:
            self.total_steps = int(sc.budget_steps)
        elif sc.budget_images is not None:
            self.total_steps = max(1, math.ceil(sc.budget_images / self.global_batch))
        else:
            raise ValueError("set schedule.budget_images or schedule.budget_steps")
        self.steps_per_epoch = max(1, self.epoch_size // self.global_batch)

        # ---- model
        self.model = StudentTeacher(cfg.model, cfg.losses, crops.global_size, prototypes, class_prior).to(self.device)
        use_sdpa(self.model)
        set_activation_checkpointing(self.model.student.backbone, cfg.run.activation_checkpointing)
        if cfg.run.pack_crops:
            if not hasattr(self.model.student.backbone, "forward_features_packed"):
                raise ValueError(f"run.pack_crops=true needs a dermino ViT backbone, got {cfg.model.arch}")
            self.model.student.pack_crops = True
        self.fsdp = bool(cfg.run.fsdp)
        # Under FSDP, rank 0 keeps an unsharded CPU copy of the teacher backbone to gather into
        # for the kNN monitor and the export (same architecture and grid, whatever the init).
        self._teacher_template: nn.Module | None = None
        if self.fsdp:
            if self.dist.is_main:
                self._teacher_template = copy.deepcopy(self.model.teacher.backbone).cpu()
            shard_branches([self.model.student, self.model.teacher], self.dist)
            self.student: nn.Module = self.model.student
        else:
            self.student = wrap_model(self.model.student, self.dist)
        self.student_call = torch.compile(self.student) if cfg.run.compile else self.student
        groups = param_groups(self.model.student, patch_embed_lr_mult=cfg.optim.patch_embed_lr_mult,
                              layerwise_decay=cfg.optim.layerwise_decay)
        self.params = [p for g in groups for p in g["params"]]
        self.last_layer_params = [p for g in groups if g["last_layer"] for p in g["params"]]
        self.optimizer = make_adamw(groups, tuple(cfg.optim.betas), self.device)  # type: ignore[arg-type]
        prec = cfg.run.precision
        if prec not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"run.precision must be fp32, bf16 or fp16, got {prec!r}")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(prec)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=prec == "fp16")

        # ---- schedules (indexed by optimizer step); a head warm-up runs first, the schedules after it
        self.warmup = HeadWarmup(self.model.student.backbone, head_warmup_steps(
            sc.head_warmup_images, cfg.model.init_weights, self.global_batch, self.total_steps, self.epoch_size))
        w = self.warmup.steps
        o, n, spe = cfg.optim, self.total_steps - w, self.steps_per_epoch
        peak_lr = scaled_lr(o.base_lr, self.global_batch)
        self.lr = cosine_schedule(peak_lr, o.min_lr, n, int(o.warmup_epochs * spe))
        self.wd = cosine_schedule(o.weight_decay, o.weight_decay_end, n)
        self.momentum = cosine_schedule(o.momentum_teacher, o.momentum_teacher_end, n)
        d = cfg.losses.dino
        self.teacher_temp = warmup_then_constant(d.warmup_teacher_temp, d.teacher_temp, n,
                                                 int(d.warmup_teacher_temp_epochs * spe))
        self.lr = prepend(w, self.lr, warmup_lr(peak_lr, w))
        self.wd, self.momentum, self.teacher_temp = (prepend(w, a) for a in (self.wd, self.momentum, self.teacher_temp))
        self.freeze_last_layer_steps = int(o.freeze_last_layer_epochs * spe)

        vit = self.model.student.backbone
        heads = cfg.model.heads
        self.flops_per_image = pretrain_flops_per_image(
            vit.embed_dim, len(vit.vit.blocks), crops.global_size, crops.local_size, crops.n_local,
            patch_size=crops.patch_size, n_prefix=vit.num_prefix_tokens,
            head=(heads.hidden_dim, heads.bottleneck_dim, heads.out_dim, heads.n_layers),
            ibot=cfg.losses.ibot.enabled,
        )
        self.peak = peak_tflops(self.device, prec, cfg.run.peak_tflops)

        self.step = 0
        # images consumed so far; kept in the checkpoint, so an allowed batch-size change on resume
        # does not make the logged image and epoch counters jump (step x new batch would)
        self.images_seen = 0
        self.data_state = (0, 0)  # (epoch, images consumed by this rank in that epoch)
        self.bad_steps = 0
        self.last_good: Path | None = None  # newest healthy checkpoint (rescue.Health): the rescue point
        self.health = rescue.Health()
        self._healthy_now = True  # whether the checkpoint being written is healthy (saved in it)
        self._reference: TrainStep | None = None  # train_step's stepper, made on first use
        torch.manual_seed(cfg.run.seed + self.dist.rank)  # per-rank drop-path noise

    # ------------------------------------------------------------------ budget / data

    def budget_summary(self) -> str:
        images = self.total_steps * self.global_batch
        tflop = images * self.flops_per_image / 1e12
        at_peak = tflop / (self.peak * self.world)
        # typical utilisation: a good GPU run reaches ~40 %; 2 CPU cores measured ~25 %
        typical = 0.4 if self.device.type == "cuda" else 0.25
        return (
            f"budget: {self.total_steps} steps x {self.global_batch} images = {images:,} images "
            f"({images / self.epoch_size:.1f} epochs of {self.epoch_size:,}); "
            f"{self.flops_per_image / 1e9:.1f} GFLOP/image, {tflop:,.1f} TFLOP in all; "
            f"{at_peak / 60:.1f} min at 100% of {self.peak:.3g} TFLOP/s x {self.world} "
            f"(~{at_peak / 60 / typical:.1f} min at {typical:.0%} MFU)"
        )

    def batches(self) -> Iterator[dict[str, Any]]:
        """Micro-batches from ``self.data_state`` on, across epochs; updates the state as it goes."""
        epoch, start = self.data_state
        while True:
            n = (self.sampler.per_rank - start) // self.micro_batch
            if n > 0:
                self.sampler.set_state(epoch, start)
                it = iter(self.loader)
                for _ in range(n):
                    batch = next(it)
                    start += self.micro_batch
                    self.data_state = (epoch, start)
                    yield batch
                del it
            epoch, start = epoch + 1, 0
            self.data_state = (epoch, start)

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        nb = self.device.type == "cuda"
        out = {k: v.to(self.device, non_blocking=nb) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return finish_batch(out, self.cfg.crops.mean, self.cfg.crops.std)  # crops.photometric=device

    # ------------------------------------------------------------------ one step

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over ``micro_batches`` with the reference sync policy (values read,
        and the skip decided, on the host every step); returns the logged values of this step."""
        if self._reference is None:
            self._reference = TrainStep(self, sync_free=False)
        row = self._reference.read(self._reference(micro_batches))
        self._check_bad_steps()
        return row

    def _check_bad_steps(self) -> None:
        if self.bad_steps >= self.cfg.run.max_bad_steps:
            raise BadStepsError(
                f"{self.bad_steps} consecutive non-finite steps (steps {self.step - self.bad_steps + 1}-{self.step}); stopping"
            )

    def _stepper(self) -> TrainStep:
        """The sync-free step when configured and correct for this setup, else the reference one."""
        why = "run.fast_step=false" if not self.cfg.run.fast_step else fast_path_blocker(self)
        if why:
            log.info("reference training step (values read every step): %s", why)
            return TrainStep(self, sync_free=False)
        return TrainStep(self, sync_free=True)

    # ------------------------------------------------------------------ checkpoints

    def _model_and_optimizer_state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Whole (unsharded) states; under FSDP every rank must call this, rank 0 gets them."""
        if not self.fsdp:
            return self.model.state_dict(), self.optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return (get_model_state_dict(self.model, options=opts),
                get_optimizer_state_dict(self.model.student, self.optimizer, options=opts))

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint body. Under FSDP call it on every rank (it gathers the shards)."""
        model_state, optimizer_state = self._model_and_optimizer_state()
        return {
            "model": model_state,
            "optimizer": optimizer_state,
            "scaler": self.scaler.state_dict(),
            "data_state": self.data_state,
            "images_seen": self.images_seen,
            "bad_steps": self.bad_steps,
            "config": to_dict(self.cfg),
            "world_size": self.world,
            "last_good": self.last_good.name if self.last_good is not None else None,
            "healthy": self._healthy_now,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("world_size", 1) != self.world:
            raise ValueError(
                f"checkpoint was written by {state.get('world_size')} process(es), this run has {self.world}: "
                "exact resume needs the same world size"
            )
        if self.fsdp:  # every rank read the whole checkpoint; each keeps its own shards
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
                set_optimizer_state_dict,
            )

            opts = StateDictOptions(full_state_dict=True)
            set_model_state_dict(self.model, state["model"], options=opts)
            set_optimizer_state_dict(self.model.student, self.optimizer, state["optimizer"], options=opts)
        else:
            try:
                self.model.load_state_dict(state["model"])
                self.optimizer.load_state_dict(state["optimizer"])
            except (RuntimeError, ValueError, KeyError) as exc:  # e.g. an allowed architecture change
                raise ValueError(f"the checkpoint does not fit this model/optimizer: {str(exc).splitlines()[0]}") from exc
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        # checkpoints from before the counter existed: every earlier step had this run's batch
        self.images_seen = int(state.get("images_seen", self.step * self.global_batch))
        self.data_state = tuple(state["data_state"])
        self.bad_steps = int(state.get("bad_steps", 0))
        ckpt.set_rng_state(state["rng"][self.dist.rank])
        healthy = state.get("healthy", self.bad_steps == 0)  # older checkpoints: no skipped step pending
        good = f"step_{self.step:08d}.pt" if healthy else state.get("last_good")
        self.last_good = self.out_dir / "checkpoints" / good if good else None

    def save(self) -> Path | None:
        path = None
        rng = [ckpt.rng_state()]
        if self.dist.enabled:  # every rank's RNG (drop-path noise differs per rank)
            rng = [None] * self.world
            dist.all_gather_object(rng, ckpt.rng_state())
        unhealthy = self.health.checkpoint(self._weights_finite())
        if self.bad_steps and not unhealthy:
            unhealthy = f"{self.bad_steps} skipped step(s) pending"
        self._healthy_now = unhealthy is None
        state = self.state_dict() if (self.dist.is_main or self.fsdp) else None
        if self.dist.is_main:
            # while training is unhealthy (a spike, a streak of skipped steps) the last healthy
            # checkpoint is never pruned: it is the one a rescue resumes from
            path = ckpt.save_checkpoint(self.out_dir / "checkpoints", self.step, state,
                                        keep=self.cfg.run.keep_checkpoints, rng=rng, protect=self.last_good)
        if unhealthy is None:
            self.last_good = self.out_dir / "checkpoints" / f"step_{self.step:08d}.pt"
        elif self.dist.is_main:
            log.warning("checkpoint of step %d is not a rescue point (%s); the rescue point stays %s",
                        self.step, unhealthy, self.last_good.name if self.last_good else "none")
        barrier()
        return path

    def _weights_finite(self) -> bool:
        """Every parameter finite, on every rank (a spike can leave huge but finite weights: the
        loss and gradient-norm checks of ``rescue.Health`` catch those)."""
        with torch.no_grad():
            finite = all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
        return bool(all_reduce_mean(torch.tensor([float(finite)], device=self.device)).item() == 1.0)

    def _guard(self, guard: collapse.CollapseGuard, verdict: collapse.Verdict) -> None:
        """Keep the checkpoint of a good evaluation; stop (naming the checkpoint to resume) on collapse."""
        ckpt_dir = self.out_dir / "checkpoints"
        if verdict.good:
            if not (self.step % self.cfg.run.checkpoint_every == 0 or self.step >= self.total_steps):
                self.save()  # the same decision on every rank (fit saved on exactly these steps)
            if self.dist.is_main:
                collapse.keep_good(ckpt_dir, self.step)
        if verdict.stop:
            message = ""
            if self.dist.is_main:
                resume, moved = collapse.set_aside(ckpt_dir, guard.last_good_step or 0)
                message = collapse.collapse_message(guard, verdict, resume, moved, self.out_dir)
                log.error(message)
            barrier()
            raise collapse.CollapseError(message or "collapse guard stopped the run (see rank 0's log)")

    def whole_teacher_backbone(self) -> nn.Module | None:
        """The teacher backbone with whole parameters on the main rank, None on the others.

        Under FSDP the shards are gathered into a fresh, unsharded copy (every rank must call
        this); otherwise it is the teacher's own backbone.
        """
        if not self.fsdp:
            return self.model.teacher.backbone if self.dist.is_main else None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.model.teacher, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.dist.is_main:
            return None
        backbone = self._teacher_template
        assert backbone is not None
        prefix = "backbone."
        backbone.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        return copy.deepcopy(backbone).to(self.device).eval()  # the template itself stays on the CPU

    # ------------------------------------------------------------------ the job

    def fit(self, resume: bool = False, resume_from: str | Path | None = None,
            allow_config_change: list[str] | tuple[str, ...] = ()) -> Path:
        """Run to the budget. ``resume``: continue from the newest checkpoint (same config, bar the
        keys in ``allow_config_change``); ``resume_from``: continue from that checkpoint (the rescue
        after a divergence; it may also change the learning rate)."""
        cfg, main = self.cfg, self.dist.is_main
        ckpt_dir = self.out_dir / "checkpoints"
        latest = ckpt.latest_checkpoint(ckpt_dir)
        resume = resume or resume_from is not None
        if latest is not None and not resume:
            raise ValueError(f"{self.out_dir} already holds checkpoints ({latest.name}); pass --resume or another --out")
        source = Path(resume_from) if resume_from is not None else (latest if resume else None)
        state, changes = None, {}
        if source is not None:
            state = ckpt.load_checkpoint(source, map_location=self.device)
            allowed = [*allow_config_change, *(rescue.RESCUE_KEYS if resume_from is not None else ())]
            changes = rescue.check_resume_config(state.get("config", {}), to_dict(cfg), allowed, source)
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if changes and (self.out_dir / "config.yaml").is_file():  # keep the recipe the earlier steps ran
                (self.out_dir / "config.yaml").replace(self.out_dir / f"config.before_step_{int(state['step'])}.yaml")
            if state is None or changes:
                save_config(cfg, self.out_dir / "config.yaml")
            if self.knowledge_summary:  # the knowledge head's classes, and the loss to beat
                (self.out_dir / "knowledge.json").write_text(json.dumps(self.knowledge_summary, indent=2))
        if state is not None:
            if resume_from is not None and main:
                for p in rescue.set_aside_later(ckpt_dir, int(state["step"])):
                    log.info("set aside %s (written after the checkpoint resumed from)", p)
            barrier()
            self.load_state_dict(state)
            if changes:
                log.warning("resumed with changed config: %s", ", ".join(f"{k}={v[1]!r}" for k, v in changes.items()))
            log.info("resumed from %s (step %d)", source, self.step)
        if main:
            log.info(self.budget_summary())
            print(self.budget_summary(), flush=True)
        metrics = _MetricsWriter(self.out_dir / "metrics.csv", self.step) if main else None
        tb = _tensorboard(self.out_dir / "tb") if main and cfg.run.tensorboard else None
        monitor = _Monitor(self) if cfg.data.monitor_train and cfg.data.monitor_val else None
        kmon, k_every = monitor_for(self), cfg.losses.knowledge.heldout_every
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (main and cfg.run.progress),
                   desc="pretrain", dynamic_ncols=True)
        if monitor and self.step == 0 and cfg.model.init_weights:
            monitor.run(0)  # the initial weights' score: the start the collapse guard compares with
        stream = self.batches()
        step = self._stepper()
        t0, images_since = time.perf_counter(), 0
        while self.step < self.total_steps:
            micro = [next(stream) for _ in range(self.accum)]
            try:
                row = step(micro)
                images_since += self.global_batch
                self.images_seen += self.global_batch
                bar.update(1)
                done = self.step >= self.total_steps
                k_due = bool(kmon) and ((k_every and self.step % k_every == 0) or done)
                if step.sync_free:  # device values: read (one sync) only when logging, saving or monitoring
                    monitoring = monitor and cfg.run.monitor_every and self.step % cfg.run.monitor_every == 0
                    if not (self.step % cfg.run.log_every == 0 or self.step % cfg.run.checkpoint_every == 0
                            or done or monitoring or k_due):
                        continue
                row = step.read(row)
                self._check_bad_steps()
                self.health.observe(self.step, row)
            except BadStepsError as exc:
                bar.close()
                if metrics:
                    metrics.close()
                raise BadStepsError(rescue.diverged_message(str(exc), self.out_dir, self.last_good,
                                                            cfg.optim.base_lr, cfg.optim.min_lr)) from None
            if k_due:  # held-out knowledge diagnostics
                row.update(kmon.run(self.model.teacher.backbone, self.model.student.knowledge_head))
            if self.step % cfg.run.log_every == 0 or done or row["skipped"] or "knowledge_heldout" in row:
                terms = all_reduce_mean(torch.tensor([row[k] for k in ("loss", *TERMS)], device=self.device))
                row.update(zip(("loss", *TERMS), terms.tolist(), strict=True))
                dt = max(time.perf_counter() - t0, 1e-9)
                ips = images_since / dt
                row.update(step=self.step, epoch=self.data_state[0] + self.data_state[1] / self.sampler.per_rank,
                           images=self.images_seen,
                           images_per_s=ips, mfu=ips * self.flops_per_image / (self.peak * 1e12 * self.world))
                bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}", ips=f"{ips:.1f}", mfu=f"{row['mfu']:.1%}")
                if metrics:
                    metrics.write(row)
                if tb:
                    for k in METRIC_COLUMNS[3:]:
                        if k in row:
                            tb.add_scalar(k, row[k], self.step)
                t0, images_since = time.perf_counter(), 0
            if self.step % cfg.run.checkpoint_every == 0 or done:
                self.save()
            if monitor and ((cfg.run.monitor_every and self.step % cfg.run.monitor_every == 0) or done):
                self._guard(monitor.guard, monitor.run(self.step))
        bar.close()
        if metrics:
            metrics.close()
        if tb:
            tb.close()
        teacher = self.whole_teacher_backbone()
        if teacher is not None:
            arch = {"name": cfg.model.arch, **to_dict(cfg.model)}
            path = ckpt.export_teacher(teacher, self.out_dir / "export", arch)
            log.info("teacher backbone exported to %s", path)
            if self.model.student.knowledge_head is not None and not self.fsdp:
                export_knowledge_head(self.model.student.knowledge_head, self.text_prototypes, self.classes,
                                      cfg.losses.knowledge, self.out_dir / "export")
        barrier()
        return self.out_dir


def _drop_rows_after(path: Path, step: int) -> None:
    """A resumed run redoes the steps after its checkpoint: forget their logged rows."""
    if path.is_file() and path.stat().st_size > 0 and step >= 0:
        old = pd.read_csv(path)
        old[old["step"] <= step].to_csv(path, index=False)


class _MetricsWriter:
    """metrics.csv, appended; on resume the rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, from_step: int):
        _drop_rows_after(path, from_step)
        new = not path.is_file() or path.stat().st_size == 0
        self.fh = open(path, "a", newline="")  # noqa: SIM115
        self.writer = csv.DictWriter(self.fh, fieldnames=METRIC_COLUMNS, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def _tensorboard(path: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("run.tensorboard=true but tensorboard is not installed; logging to CSV only")
        return None
    return SummaryWriter(str(path))


def _split_rows(df: pd.DataFrame, split: str) -> pd.DataFrame:
    """Rows of ``split`` when the manifest has them (one adapter manifest serves both), else all."""
    if "split" in df.columns and (df["split"] == split).any():
        out = df[df["split"] == split].reset_index(drop=True)
        out.attrs = dict(df.attrs)
        return out
    return df


class _Monitor:
    """kNN accuracy and macro AUROC of the teacher on the monitor manifests, appended to monitor.csv
    (rank 0) with their change from step 0, judged by the collapse guard."""

    def __init__(self, trainer: Trainer):
        self.t = trainer
        self.train_df = _split_rows(read_manifest(trainer.cfg.data.monitor_train), "train")
        self.val_df = _split_rows(read_manifest(trainer.cfg.data.monitor_val), "val")
        r = trainer.cfg.run
        self.guard = collapse.CollapseGuard(r.collapse_metric, r.collapse_margin, r.collapse_patience)
        path = trainer.out_dir / "monitor.csv"
        if trainer.dist.is_main:
            if trainer.step == 0:  # a fresh start (perhaps after a collapse stop): a new baseline
                path.unlink(missing_ok=True)
            _drop_rows_after(path, trainer.step)
            if path.is_file() and path.stat().st_size > 0:  # a resumed run: the start and the streak
                self.guard.replay(pd.read_csv(path).to_dict("records"))

    def run(self, step: int) -> collapse.Verdict:
        """Evaluate (rank 0) and return the guard's verdict (the same on every rank)."""
        from dermino.pretrain.monitor import knn_scores

        teacher = self.t.whole_teacher_backbone()  # every rank (FSDP gathers shards)
        verdict = None
        if teacher is not None:
            with torch.random.fork_rng(devices=[]):
                scores = knn_scores(teacher, self.train_df, self.val_df, self.t.cfg.data.monitor_size, self.t.device)
            verdict = self.guard.update(step, scores)
            path = self.t.out_dir / "monitor.csv"
            new = not path.is_file() or path.stat().st_size == 0
            with open(path, "a", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=collapse.MONITOR_COLUMNS, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(self.guard.row(step, scores, verdict))
            change = "" if verdict.change is None else f" ({self.guard.metric} {verdict.change:+.4f} from the start)"
            log.info("step %d: kNN (k=5) accuracy %.4f, macro AUROC %.4f%s", step, scores["knn_accuracy"],
                     scores["knn_macro_auroc"], change)
        if dist.is_initialized():
            box = [verdict]
            dist.broadcast_object_list(box, src=0)
            verdict = box[0]
        barrier()
        assert verdict is not None
        return verdict


def pretrain(cfg: PretrainConfig, resume: bool = False, resume_from: str | Path | None = None,
             allow_config_change: list[str] | tuple[str, ...] = ()) -> Path:
    """Run (or resume) a pretraining job; returns the output directory.

    Under torchrun each process calls this; a single process needs nothing special.
    """
    started = not dist.is_initialized()
    info = init_distributed(cfg.run.device)
    try:
        return Trainer(cfg, info).fit(resume=resume, resume_from=resume_from, allow_config_change=allow_config_change)
    finally:
        if started and info.enabled:
            cleanup()
