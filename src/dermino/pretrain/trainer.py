"""The pretraining loop: data stream, schedules, AMP, accumulation, EMA, guards, logging, resume.

``pretrain(cfg) -> Path`` runs a whole job (the CLI and the demo call it). ``Trainer`` holds
the pieces so tests can drive single steps. A step: set lr / wd from the schedules, run the
student and teacher on each micro-batch (DDP / FSDP sync only on the last one), check the loss and
gradient norm are finite on every rank (else skip the step, report it, and stop after
``run.max_bad_steps`` in a row), clip, step AdamW, then move the teacher by EMA.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.distributed as dist
from torch import nn

from dermino.config import save_config, to_dict
from dermino.data.photometric import finish_batch, multicrop_transform
from dermino.pretrain import checkpoint as ckpt
from dermino.pretrain import collapse, rescue
from dermino.pretrain.builders import (  # noqa: F401  (load_pretrain_manifest: re-exported, its old home)
    build_budget,
    build_data,
    build_model,
    build_optimizer,
    build_schedules,
    check_global_batch,
    flops_per_image,
    load_pretrain_manifest,
    stage_at,
)
from dermino.pretrain.config import PretrainConfig, validate
from dermino.pretrain.distributed import (
    DistInfo,
    all_reduce_mean,
    barrier,
    cleanup,
    init_distributed,
    pick_device,
)
from dermino.pretrain.fast_step import TrainStep, fast_path_blocker
from dermino.pretrain.flops import peak_tflops
from dermino.pretrain.knowledge_monitor import monitor_for
from dermino.pretrain.knowledge_setup import export_knowledge_head
from dermino.pretrain.model import TERMS
from dermino.pretrain.monitor import KnnMonitor
from dermino.pretrain.run_log import RunLog, Throughput
from dermino.pretrain.state import LoopState, StepParts
from dermino.progress import tqdm
from dermino.runtime import seed_everything

log = logging.getLogger(__name__)

class BadStepsError(RuntimeError):
    """Too many consecutive non-finite steps: the run has diverged."""


def _forward(holder: str, name: str) -> property:
    """A trainer attribute that reads and writes ``self.<holder>.<name>``."""
    return property(lambda self: getattr(getattr(self, holder), name),
                    lambda self, value: setattr(getattr(self, holder), name, value))


class Trainer:
    """Builds the run's pieces from a config (:mod:`dermino.pretrain.builders`); ``fit`` runs the job."""

    def __init__(self, cfg: PretrainConfig, dist_info: DistInfo | None = None, df: pd.DataFrame | None = None):
        validate(cfg)
        self.cfg = cfg
        self.dist = dist_info or DistInfo(device=pick_device(cfg.run.device))
        self.device = self.dist.device
        self.world = self.dist.world_size
        check_global_batch(cfg, self.world)
        self.out_dir = Path(cfg.run.out_dir)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        seed_everything(cfg.run.seed)
        if cfg.crops.patch_size != 14 and "_14" in cfg.model.arch:
            raise ValueError(f"crops.patch_size={cfg.crops.patch_size} but {cfg.model.arch} uses patch 14")

        data = build_data(cfg, self.dist, self.out_dir, df)
        self.df, self.dataset, self.sampler, self.loader = data.df, data.dataset, data.sampler, data.loader
        self.micro_batch, self.accum, self.global_batch = data.micro_batch, data.accum, data.global_batch
        self.epoch_size, self.classes, self.knowledge_summary = data.epoch_size, data.classes, data.knowledge_summary
        if data.prototypes is not None:
            self.text_prototypes = data.prototypes
        self.total_steps, self.steps_per_epoch = build_budget(cfg, self.global_batch, self.epoch_size)

        m = build_model(cfg, self.dist, data.prototypes, data.class_prior)
        self.model, self.student, self.student_call, self.fsdp = m.model, m.student, m.student_call, m.fsdp
        self._teacher_template = m.teacher_template
        o = build_optimizer(cfg, self.model, self.device)
        self.optimizer, self.params, self.last_layer_params = o.optimizer, o.params, o.last_layer_params
        self.amp_dtype, self.scaler = o.amp_dtype, o.scaler
        self.schedules = build_schedules(cfg, self.model.student.backbone, self.total_steps, self.global_batch,
                                         self.epoch_size, self.steps_per_epoch)
        self.flops_per_image = flops_per_image(cfg, self.model.student.backbone)
        self.peak = peak_tflops(self.device, cfg.run.precision, cfg.run.peak_tflops)

        self.state = LoopState()
        self.stage = 0  # schedule.stages: the crop sizes in use (0: crops); set again on resume
        self._loader_stale = False  # the crop sizes changed: batches() restarts the loader where it is
        self.last_good: Path | None = None  # newest healthy checkpoint (rescue.Health): the rescue point
        self.health = rescue.Health()
        self._healthy_now = True  # whether the checkpoint being written is healthy (saved in it)
        self._reference: TrainStep | None = None  # train_step's stepper, made on first use
        torch.manual_seed(cfg.run.seed + self.dist.rank)  # per-rank drop-path noise

    # the loop state and the schedules, under the names callers and tests use
    step = _forward("state", "step")
    bad_steps = _forward("state", "bad_steps")
    images_seen = _forward("state", "images_seen")
    data_state = _forward("state", "data_state")
    lr = _forward("schedules", "lr")
    wd = _forward("schedules", "wd")
    momentum = _forward("schedules", "momentum")
    teacher_temp = _forward("schedules", "teacher_temp")
    warmup = _forward("schedules", "warmup")
    freeze_last_layer_steps = _forward("schedules", "freeze_last_layer_steps")

    def step_parts(self) -> StepParts:
        """What a training step reads (the step never sees the trainer itself)."""
        return StepParts(
            model=self.model, student=self.student, student_call=self.student_call, optimizer=self.optimizer,
            scaler=self.scaler, params=self.params, last_layer_params=self.last_layer_params,
            schedules=self.schedules, total_steps=self.total_steps, device=self.device, fsdp=self.fsdp,
            clip_grad=self.cfg.optim.clip_grad, amp_dtype=self.amp_dtype, to_device=self._to_device,
        )

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
        """Micro-batches from ``self.data_state`` on, across epochs; updates the state as it goes.

        When a resolution stage starts (``set_stage``), the loader is restarted at the current
        position with the new crop sizes: the same samples, with the same per-sample seeds."""
        while True:
            epoch, start = self.data_state
            n = (self.sampler.per_rank - start) // self.micro_batch
            self._loader_stale = False
            if n > 0:
                self.sampler.set_state(epoch, start)
                it = iter(self.loader)
                for _ in range(n):
                    batch = next(it)
                    start += self.micro_batch
                    self.data_state = (epoch, start)
                    yield batch
                    if self._loader_stale:
                        break
                del it
                if self._loader_stale:
                    continue
            self.data_state = (epoch + 1, 0)

    def set_stage(self, step: int) -> bool:
        """Use the crop sizes of the resolution stage of ``step`` (``schedule.stages``); True on a change."""
        index, crops = stage_at(self.cfg, step, self.total_steps)
        if index == self.stage:
            return False
        self.stage = index
        self.dataset.transform = multicrop_transform(crops)
        self.flops_per_image = flops_per_image(self.cfg, self.model.student.backbone, crops)
        self._loader_stale = True
        if self.dist.is_main:
            log.info("step %d: resolution stage %d, global crops %d px, local crops %d px",
                     step, index, crops.global_size, crops.local_size)
        return True

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        nb = self.device.type == "cuda"
        out = {k: v.to(self.device, non_blocking=nb) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        return finish_batch(out, self.cfg.crops.mean, self.cfg.crops.std)  # crops.photometric=device

    # ------------------------------------------------------------------ one step

    def train_step(self, micro_batches: list[dict[str, Any]]) -> dict[str, float]:
        """One optimizer step over ``micro_batches`` with the reference sync policy (values read,
        and the skip decided, on the host every step); returns the logged values of this step."""
        if self._reference is None:
            self._reference = TrainStep(self.step_parts(), self.state, sync_free=False)
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
        parts = self.step_parts()
        why = "run.fast_step=false" if not self.cfg.run.fast_step else fast_path_blocker(parts)
        if why:
            log.info("reference training step (values read every step): %s", why)
            return TrainStep(parts, self.state, sync_free=False)
        return TrainStep(parts, self.state, sync_free=True)

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
        self._start(resume, resume_from, allow_config_change)
        log_out = RunLog(self) if main else None
        monitor = KnnMonitor(self) if cfg.data.monitor_train and cfg.data.monitor_val else None
        kmon, k_every = monitor_for(self), cfg.losses.knowledge.heldout_every
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not (main and cfg.run.progress),
                   desc="pretrain", dynamic_ncols=True)
        if monitor and self.step == 0 and cfg.model.init_weights:
            monitor.run(0)  # the initial weights' score: the start the collapse guard compares with
        self.set_stage(self.step)  # a resumed run may start inside a later stage
        stream = self.batches()
        step = self._stepper()
        clock = Throughput()
        try:
            while self.step < self.total_steps:
                self.set_stage(self.step)
                row = step([next(stream) for _ in range(self.accum)])
                clock.add(self.global_batch)
                self.images_seen += self.global_batch
                bar.update(1)
                done = self.step >= self.total_steps
                k_due = bool(kmon) and ((k_every and self.step % k_every == 0) or done)
                monitor_due = bool(monitor) and ((cfg.run.monitor_every and self.step % cfg.run.monitor_every == 0)
                                                 or done)
                save_due = self.step % cfg.run.checkpoint_every == 0 or done
                log_due = self.step % cfg.run.log_every == 0 or done
                if step.sync_free and not (log_due or save_due or monitor_due or k_due):
                    continue  # device values: read (one sync) only when logging, saving or monitoring
                row = step.read(row)
                self._check_bad_steps()
                self.health.observe(self.step, row)
                if k_due:  # held-out knowledge diagnostics
                    row.update(kmon.run(self.model.teacher.backbone, self.model.student.knowledge_head))
                if log_due or row["skipped"] or "knowledge_heldout" in row:
                    self._log_row(row, clock, bar, log_out)
                if save_due:
                    self.save()
                if monitor_due:
                    self._guard(monitor.guard, monitor.run(self.step))
        except BadStepsError as exc:
            raise BadStepsError(rescue.diverged_message(str(exc), self.out_dir, self.last_good,
                                                        cfg.optim.base_lr, cfg.optim.min_lr)) from None
        finally:
            bar.close()
            if log_out:
                log_out.close()
        self._export()
        barrier()
        return self.out_dir

    def _start(self, resume: bool, resume_from: str | Path | None, allow_config_change: Sequence[str]) -> None:
        """Fresh start or resume: check the checkpoint's config, write the run's config, load the state."""
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

    def _log_row(self, row: dict[str, Any], clock: Throughput, bar: Any, log_out: RunLog | None) -> None:
        """Average the loss terms over ranks, add counters and speed, write metrics.csv / TensorBoard."""
        terms = all_reduce_mean(torch.tensor([row[k] for k in ("loss", *TERMS)], device=self.device))
        row.update(zip(("loss", *TERMS), terms.tolist(), strict=True))
        ips = clock.rate()
        row.update(step=self.step, epoch=self.data_state[0] + self.data_state[1] / self.sampler.per_rank,
                   images=self.images_seen,
                   images_per_s=ips, mfu=ips * self.flops_per_image / (self.peak * 1e12 * self.world))
        bar.set_postfix(loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.2e}", ips=f"{ips:.1f}", mfu=f"{row['mfu']:.1%}")
        if log_out:
            log_out.write(row, self.step)
        clock.reset()

    def _export(self) -> None:
        """The teacher backbone (and the knowledge head) as plain files for every later command."""
        teacher = self.whole_teacher_backbone()
        if teacher is None:
            return
        cfg = self.cfg
        arch = {"name": cfg.model.arch, **to_dict(cfg.model)}
        path = ckpt.export_teacher(teacher, self.out_dir / "export", arch)
        log.info("teacher backbone exported to %s", path)
        if self.model.student.knowledge_head is not None and not self.fsdp:
            export_knowledge_head(self.model.student.knowledge_head, self.text_prototypes, self.classes,
                                  cfg.losses.knowledge, self.out_dir / "export")


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
