"""The training step, one code path with two sync policies, and the pieces of the fast path.

Why: on a GPU every ``float(tensor)`` or ``bool(tensor)`` waits for the device to finish, so
the CPU cannot queue the next step's kernels (and the data copy) while the GPU works. The
reference policy reads the loss and gradient norm every step (to skip a non-finite step); the
sync-free policy (``run.fast_step``, default) keeps those checks on the device:

- a non-finite loss / gradient norm sets ``found_inf`` on the *fused* AdamW, which then leaves
  parameters, moments and its step counter unchanged (the same mechanism ``GradScaler`` uses);
- the EMA teacher and the DINO centres are updated with a momentum of 1 on such a step;
- the logged values (losses, gradient norm, teacher entropy, prototypes used), the skipped-step
  count and the consecutive-bad-step counter are read once per log interval (``TrainStep.read``),
  so a diverged run stops at the next read rather than at the bad step itself (skipped steps
  change nothing, so only time is lost);
- the iBOT masked-token index (``nonzero``, which syncs on a GPU) is computed on the host
  before the batch is copied (pinned, non-blocking).

The head warm-up of continued pretraining needs no sync (which steps freeze the backbone is known
on the host), so it runs on both policies. Other pieces of the fast path live here too: fused
AdamW (CPU and GPU), SDPA attention, and optional activation checkpointing.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dermino.losses import masked_patch_weights
from dermino.pretrain.collapse import teacher_statistics_values
from dermino.pretrain.distributed import full_value
from dermino.pretrain.model import TERMS
from dermino.pretrain.state import LoopState, StepParts

log = logging.getLogger(__name__)


def fused_adamw_supported(device: torch.device) -> bool:
    """Fused AdamW kernels exist for CUDA and CPU (torch >= 2.4); on CPU it is ~6x faster than the loop."""
    return device.type in ("cuda", "cpu")


def make_adamw(groups: list[dict[str, Any]], betas: tuple[float, float], device: torch.device) -> torch.optim.AdamW:
    """AdamW over ``groups``: fused where the device has the kernel, else the foreach version."""
    if fused_adamw_supported(device):
        return torch.optim.AdamW(groups, lr=0.0, betas=betas, fused=True)
    return torch.optim.AdamW(groups, lr=0.0, betas=betas, foreach=True)


def use_sdpa(module: nn.Module) -> int:
    """Make every timm attention layer call ``F.scaled_dot_product_attention`` (flash / memory-
    efficient kernels on a GPU); timm does by default unless TIMM_FUSED_ATTN=0. Returns the count."""
    n = 0
    for m in module.modules():
        if hasattr(m, "fused_attn"):
            m.fused_attn = True
            n += 1
    return n


def set_activation_checkpointing(backbone: nn.Module, enabled: bool) -> None:
    """Recompute each block's activations in the backward pass (less memory, ~30 % more compute)."""
    vit = getattr(backbone, "vit", None)
    if vit is None or not hasattr(vit, "set_grad_checkpointing"):
        if enabled:
            raise ValueError(f"activation checkpointing needs a timm ViT backbone, got {type(backbone).__name__}")
        return
    vit.set_grad_checkpointing(enabled)


def with_ibot_index(batch: dict[str, Any]) -> dict[str, Any]:
    """Add the iBOT masked-patch weights and flat index, computed on the host (no device sync)."""
    if batch.get("masks") is not None and "mask_index" not in batch:
        weights, index = masked_patch_weights(batch["masks"])
        if batch["masks"].is_pinned():  # keep the copy to the device asynchronous
            weights, index = weights.pin_memory(), index.pin_memory()
        batch = {**batch, "mask_weights": weights, "mask_index": index}
    return batch


def fast_path_blocker(parts: StepParts | Any) -> str | None:
    """Why the fast step cannot be used with these parts (a ``StepParts`` or anything with the same
    ``scaler`` and ``optimizer``, e.g. a trainer); None: it can."""
    if parts.scaler.is_enabled():
        return "fp16 uses a GradScaler, which reads its scale every step"
    if not any(g.get("fused") for g in parts.optimizer.param_groups):
        return "the optimizer is not fused AdamW (found_inf skipping needs it)"
    return None


class TrainStep:
    """One optimizer step, for both sync policies, on a run's ``StepParts`` and ``LoopState``.

    ``sync_free=True`` (the fast path, ``run.fast_step``): the skip decision of a non-finite step
    stays on the device (``found_inf`` on the fused AdamW, momentum 1 for the teacher and centres)
    and the values are read when ``read`` is called (every log interval). ``sync_free=False`` (the
    reference, used by ``Trainer.train_step``, fp16 and non-fused optimizers): the decision is read
    on the host every step and a skipped step runs no optimizer, EMA or centre update at all.
    Everything else -- schedules, accumulation, DDP/FSDP gradient sync, the head warm-up,
    last-layer freezing, clipping, the logged columns -- is this one code path.

    The step reads ``parts`` and advances ``state`` (``step``, and ``bad_steps`` when read); a
    pretrain ``Trainer`` may be passed alone for both (``TrainStep(trainer)``).
    """

    def __init__(self, parts: StepParts | Any, state: LoopState | None = None, sync_free: bool = True):
        if state is None:  # a Trainer: its parts and its loop state
            parts, state = parts.step_parts(), parts.state
        why = fast_path_blocker(parts) if sync_free else None
        if why:
            raise ValueError(f"fast step unavailable: {why}")
        self.parts: StepParts = parts
        self.state: LoopState = state
        self.sync_free = sync_free
        dev = parts.device
        self.consecutive = torch.tensor(state.bad_steps, device=dev, dtype=torch.int64)
        self.skipped = torch.zeros((), device=dev, dtype=torch.int64)
        self.first_unread = state.step

    def _finite_everywhere(self, finite: Tensor) -> Tensor:
        if not (dist.is_available() and dist.is_initialized()):
            return finite
        bad = (~finite).to(torch.float32)
        dist.all_reduce(bad)  # stays on the device (no .item())
        return bad == 0

    @torch.no_grad()
    def _masked_teacher_update(self, momentum: float, ok: Tensor, backbone: bool) -> None:
        keep = ok.to(torch.float32) * (1.0 - momentum)  # 0 on a skipped step: the teacher stays
        teacher, student = self.parts.model.teacher_student_pairs(backbone)
        torch._foreach_lerp_(teacher, [p.detach() for p in student], keep)

    @torch.no_grad()
    def _masked_center_update(self, teacher_logits: list[dict[str, Tensor]], ok: Tensor) -> None:
        model = self.parts.model
        if model.losses.dino.normalisation != "centering":
            return
        centers = [model.dino_center, model.ibot_center]
        old = [c.center.clone() for c in centers]
        for tl in teacher_logits:
            model.update_centers(tl)
        for c, before in zip(centers, old, strict=True):
            if before.shape == c.center.shape:
                c.center.copy_(torch.where(ok, c.center, before))
            else:  # created by this update: a skipped step leaves it at zero
                c.center.mul_(ok.to(c.center.dtype))

    def _update(self, ok: Tensor, momentum: float, teacher_logits: list[dict[str, Tensor]], warm: bool) -> None:
        """Optimizer, EMA teacher and centres, each only on a good step."""
        t, opt = self.parts, self.parts.optimizer
        if self.sync_free:
            opt.grad_scale, opt.found_inf = None, (~ok).to(torch.float32)  # type: ignore[attr-defined]
            try:
                opt.step()
            finally:
                del opt.grad_scale, opt.found_inf  # type: ignore[attr-defined]
        elif bool(ok):
            t.scaler.step(opt)
            t.scaler.update()
        else:
            if t.scaler.is_enabled():
                t.scaler.update()
            return
        if t.fsdp:  # FSDP leaves a root's whole parameters in place after forward
            t.model.teacher.reshard()  # type: ignore[operator]
            t.model.student.reshard()  # type: ignore[operator]
        if self.sync_free:
            self._masked_teacher_update(momentum, ok, backbone=not warm)
            self._masked_center_update(teacher_logits, ok)
        else:
            t.model.update_teacher(momentum, backbone=not warm)
            for tl in teacher_logits:
                t.model.update_centers(tl)

    def __call__(self, micro_batches: list[dict[str, Any]]) -> dict[str, Any]:
        """Run the step; the row holds device tensors until ``read``."""
        t, state, sched = self.parts, self.state, self.parts.schedules
        if not self.sync_free:  # the loop's counter may have been set (resume) since the last step
            self.consecutive.fill_(state.bad_steps)
        s = min(state.step, t.total_steps - 1)
        lr, wd, mom, temp = sched.lr[s], sched.wd[s], sched.momentum[s], sched.teacher_temp[s]
        for g in t.optimizer.param_groups:
            g["lr"] = lr * g["lr_mult"]
            g["weight_decay"] = wd * g["wd_mult"]
        warm = sched.warmup.active(state.step)
        gram = t.model.losses.gram
        if gram.enabled and gram.refresh_every and state.step and state.step % gram.refresh_every == 0:
            t.model.refresh_gram_teacher()  # a new snapshot of the EMA teacher before this step
        gram_on = gram.enabled and state.step >= gram.start_step
        t.model.train()
        sched.warmup.begin(state.step)
        dev = t.device
        loss_sum = torch.zeros((), device=dev)
        term_sum = torch.zeros(len(TERMS), device=dev)
        teacher_logits = []
        n = len(micro_batches)
        for i, mb in enumerate(micro_batches):
            mb = t.to_device(with_ibot_index(mb) if self.sync_free else mb)
            sync = n == 1 or i == n - 1
            if t.fsdp:
                t.student.set_requires_gradient_sync(sync)  # type: ignore[operator]
            no_sync = not sync and not t.fsdp and hasattr(t.student, "no_sync")
            with t.student.no_sync() if no_sync else contextlib.nullcontext():  # type: ignore[operator]
                with t.autocast():
                    out = t.model.compute_loss(mb, float(temp), student=t.student_call, gram=gram_on)
                t.scaler.scale(out.loss / n).backward()
            loss_sum += out.loss.detach().float() / n
            term_sum += torch.stack([out.terms[k].detach().float() for k in TERMS]) / n
            teacher_logits.append(out.teacher_logits)
        if state.step < sched.freeze_last_layer_steps:
            for p in t.last_layer_params:
                p.grad = None
        sched.warmup.drop_backbone_grads(state.step)
        t.scaler.unscale_(t.optimizer)
        clip = t.clip_grad
        grad_norm = full_value(torch.nn.utils.clip_grad_norm_(t.params, clip if clip > 0 else float("inf")))
        finite = torch.isfinite(loss_sum)
        if not t.scaler.is_enabled():  # fp16: an overflowing gradient is the scaler's business
            finite = finite & torch.isfinite(grad_norm)
        ok = self._finite_everywhere(finite)
        self._update(ok, float(mom), teacher_logits, warm)
        t.optimizer.zero_grad(set_to_none=True)
        not_ok = (~ok).to(torch.int64)
        self.consecutive = (self.consecutive + 1) * not_ok
        self.skipped += not_ok
        stats = torch.full((2,), float("nan"), device=dev)
        if teacher_logits and "dino" in teacher_logits[0]:
            stats = teacher_statistics_values(torch.cat([tl["dino"] for tl in teacher_logits]), float(temp))
        state.step += 1
        return {"loss_terms": torch.cat([loss_sum.reshape(1), term_sum, grad_norm.float().reshape(1), stats]),
                "lr": float(lr), "wd": float(wd), "momentum": float(mom), "teacher_temp": float(temp),
                "head_warmup": int(warm)}

    def read(self, row: dict[str, Any]) -> dict[str, Any]:
        """Floats of the last step (one device sync); updates ``state.bad_steps`` and logs skips."""
        values = torch.cat([row["loss_terms"].float(), self.skipped.reshape(1).float(),
                            self.consecutive.reshape(1).float()]).tolist()
        loss, *terms = values[: 1 + len(TERMS)]
        grad_norm, entropy, used, skipped, consecutive = values[1 + len(TERMS):]
        out = {k: v for k, v in row.items() if k != "loss_terms"}
        out.update(zip(TERMS, terms, strict=True))
        out.update(loss=loss, grad_norm=grad_norm, skipped=int(skipped))
        if not math.isnan(entropy):
            out.update(teacher_entropy=entropy, prototypes_used=used)
        self.state.bad_steps = int(consecutive)
        if skipped:  # steps numbered from 1, as in metrics.csv
            if self.state.step - self.first_unread == 1:
                log.warning("step %d: non-finite loss or gradient (loss=%s, grad_norm=%s): step skipped (%d in a row)",
                            self.state.step, loss, grad_norm, int(consecutive))
            else:
                log.warning("steps %d-%d: %d step(s) had a non-finite loss or gradient and were skipped (%d in a row now)",
                            self.first_unread + 1, self.state.step, int(skipped), int(consecutive))
        self.skipped.zero_()
        self.first_unread = self.state.step
        return out


#: the sync-free step (``TrainStep(trainer)``); the name the benchmarks and older code use
FastStep = TrainStep
