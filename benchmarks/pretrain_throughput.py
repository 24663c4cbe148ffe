"""Pretraining throughput under the full recipe: images/s, step time, peak memory, MFU.

Each row runs in its own process (so peak memory and torch.compile are per row) and times the
real training step (student + teacher, DINO + iBOT + KoLeo + knowledge losses, AdamW, EMA) on
pre-collated batches of random pixels -- the model's speed, not the loader's (see
data_pipeline.py for that). Paths:

- ``fast``: the default sync-free ``TrainStep`` (fused AdamW, SDPA, device-side skip checks,
  values read once per repeat);
- ``packed``: ``fast`` with ``run.pack_crops=true`` (global and local crops in one forward);
- ``reference``: ``Trainer.train_step`` with the for-loop AdamW and explicit attention (the path
  before the fast one: values read every step);
- ``naive``: a plain timm ViT of the same size, written the way one would without dermino: the
  same crops and the same four losses written naively (Python loops over view pairs, Sinkhorn
  by hand), default AdamW, an EMA loop over parameters, ``loss.item()`` every step;
- ``versus``: ``fast`` and ``naive`` alternating step by step in one process (order swapped every
  round), so both see the same load: the fair comparison on a shared machine.

MFU = images/s x analytic FLOPs per image / peak; the analytic count (``pretrain/flops.py``) is
cross-checked against ``torch.utils.flop_counter`` on one step of each model (``flops_check`` =
counted / analytic). The CPU peak is the theoretical fp32 peak of the threads used. On a shared
machine wall-clock rates depend on the other jobs (the load average is printed with every row), so
each row also gives images per CPU-second of the process and the MFU of the CPU time it received
(``MFU/CPU``: what the same threads reach with their cores to themselves).

    python benchmarks/pretrain_throughput.py                    # CPU grid (~15-25 min on 2 busy cores)
    python benchmarks/pretrain_throughput.py --grid gpu         # GPU grid (or: bash benchmarks/gpu_suite.sh)
    python benchmarks/pretrain_throughput.py --grid cpu --only 0,3,9   # some rows of a grid
    python benchmarks/pretrain_throughput.py --rows tiny:16:fp32:eager:fast,small:16:bf16:compile:fast \
        --global-size 112 --local-size 56                       # an ad-hoc grid (was bench_pretrain.py)
Writes benchmarks/results/pretrain_throughput_<device>.json (or ``--json``). A row that fails (out of
memory, a compiler error, a timeout) is printed and saved with its error, never dropped.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from _common import RESULTS, load_average, time_steps, write_json
from torch import nn

N_CLASSES = 10
SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}

#: (model, batch, precision, compile, path); the first ``fast`` row of each model also counts FLOPs
GRIDS = {
    "cpu": [
        ("tiny", 4, "fp32", False, "fast"), ("tiny", 4, "fp32", False, "reference"),
        ("tiny", 4, "fp32", False, "naive"), ("tiny", 4, "bf16", False, "fast"),
        ("tiny", 2, "fp32", False, "fast"), ("tiny", 8, "fp32", False, "fast"), ("tiny", 16, "fp32", False, "fast"),
        ("tiny", 4, "fp32", True, "fast"), ("tiny", 4, "bf16", True, "fast"), ("tiny", 4, "fp32", False, "packed"),
        ("small", 2, "fp32", False, "fast"), ("small", 4, "fp32", False, "fast"), ("small", 8, "fp32", False, "fast"),
        ("small", 16, "fp32", False, "fast"), ("small", 2, "bf16", False, "fast"), ("small", 2, "fp32", True, "fast"),
        ("small", 2, "fp32", False, "packed"),
        ("base", 2, "fp32", False, "fast"), ("base", 2, "bf16", False, "fast"), ("base", 2, "fp32", True, "fast"),
        ("tiny", 4, "fp32", False, "versus"), ("tiny", 4, "bf16", False, "versus"),
    ],
    "gpu": [
        (m, b, "bf16", c, "fast") for m in ("small", "base") for b in (32, 64, 128) for c in (False, True)
    ] + [("base", 64, "fp32", False, "fast"), ("base", 64, "bf16", False, "packed"), ("base", 64, "bf16", True, "packed"),
         ("base", 64, "bf16", False, "reference"), ("base", 64, "bf16", False, "naive")],
}
PATHS = ("fast", "packed", "reference", "naive", "versus")


def parse_rows(text: str) -> list[tuple]:
    """``--rows tiny:16:fp32:eager:fast,small:8:bf16:compile:packed``: an ad-hoc grid."""
    rows = []
    for item in filter(None, text.split(",")):
        parts = item.split(":")
        if len(parts) != 5 or parts[0] not in SIZES or parts[3] not in ("eager", "compile") or parts[4] not in PATHS \
                or parts[2] not in ("fp32", "bf16", "fp16") or not parts[1].isdigit():
            raise SystemExit(f"--rows: bad row {item!r}; want MODEL:BATCH:PRECISION:eager|compile:PATH with MODEL in "
                             f"{sorted(SIZES)}, PRECISION fp32|bf16|fp16, PATH in {PATHS}")
        rows.append((parts[0], int(parts[1]), parts[2], parts[3] == "compile", parts[4]))
    return rows


def make_config(model: str, batch: int, precision: str, compile_: bool, device: str, args: argparse.Namespace,
                pack: bool = False):
    from dermino.data.transforms import CropsConfig
    from dermino.models.heads import HeadConfig
    from dermino.pretrain.config import ModelConfig, PretrainConfig, RunConfig, ScheduleConfig

    cfg = PretrainConfig()
    cfg.model = ModelConfig(arch=f"dermino_vit_{model}_14", drop_path_rate=0.1, heads=HeadConfig(out_dim=args.prototypes))
    cfg.crops = CropsConfig(global_size=args.global_size, local_size=args.local_size, n_local=args.n_local)
    cfg.losses.knowledge.prototypes = "random"
    cfg.schedule = ScheduleConfig(batch_size=batch, budget_steps=1000)
    cfg.optim.freeze_last_layer_epochs = 0
    cfg.run = RunConfig(out_dir=args.tmp, device=device, precision=precision, compile=compile_, progress=False,
                        threads=args.threads, pack_crops=pack)
    return cfg


def synthetic_batch(cfg, seed: int) -> dict:
    from dermino.data.masking import batch_masks

    b, c = cfg.schedule.batch_size, cfg.crops
    g = torch.Generator().manual_seed(seed)
    grid = (c.global_size // 14, c.global_size // 14)
    targets = torch.zeros(b, N_CLASSES)
    targets[torch.arange(b), torch.arange(b) % N_CLASSES] = 1
    return {
        "global_crops": torch.randn(2 * b, 3, c.global_size, c.global_size, generator=g),
        "local_crops": torch.randn(c.n_local * b, 3, c.local_size, c.local_size, generator=g),
        "masks": batch_masks(2 * b, grid, cfg.masking, np.random.default_rng(seed)),
        "targets": targets, "label_mask": torch.ones(b, N_CLASSES), "n_global": 2, "n_local": c.n_local,
    }


# --------------------------------------------------------------------------- the naive baseline


class NaiveDino:
    """Plain timm ViT student/teacher with the four losses written the obvious way."""

    def __init__(self, size: str, out_dim: int, device: torch.device):
        import timm

        dim, depth, heads = SIZES[size]
        vit = timm.models.vision_transformer.VisionTransformer(
            img_size=224, patch_size=14, embed_dim=dim, depth=depth, num_heads=heads, num_classes=0,
            init_values=1e-5, drop_path_rate=0.1, dynamic_img_size=True)

        def head() -> nn.Module:
            last = nn.utils.parametrizations.weight_norm(nn.Linear(256, out_dim, bias=False))
            return nn.Sequential(nn.Linear(dim, 2048), nn.GELU(), nn.Linear(2048, 2048), nn.GELU(),
                                 nn.Linear(2048, 256), _L2Norm(), last)

        self.student = nn.ModuleDict({"vit": vit, "dino": head(), "ibot": head(),
                                      "know": nn.Linear(dim, N_CLASSES, bias=False)}).to(device)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, dim, device=device))
        self.teacher = copy.deepcopy(self.student).requires_grad_(False)
        self.params = [*self.student.parameters(), self.mask_token]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.04)

    def features(self, net: nn.ModuleDict, x: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        vit = net["vit"]
        t = vit.patch_embed(x)
        if masks is not None:
            t = torch.where(masks.view(*t.shape[:3], 1), self.mask_token, t)
        return vit.norm(vit.blocks(vit._pos_embed(t)))

    @staticmethod
    def sinkhorn(logits: torch.Tensor, temp: float) -> torch.Tensor:
        q = torch.exp(logits / temp).t()
        q /= q.sum()
        k, n = q.shape
        for _ in range(3):
            q /= q.sum(dim=1, keepdim=True)
            q /= k
            q /= q.sum(dim=0, keepdim=True)
            q /= n
        return (q * n).t()

    def step(self, batch: dict) -> float:
        g, loc, masks = batch["global_crops"], batch["local_crops"], batch["masks"]
        b = g.shape[0] // 2
        s_g = self.features(self.student, g, masks)
        s_l = self.features(self.student, loc)
        with torch.no_grad():
            t_g = self.features(self.teacher, g)
            t_cls = self.teacher["dino"](t_g[:, 0])
            targets = [self.sinkhorn(v, 0.07) for v in t_cls.chunk(2)]
        s_views = list(self.student["dino"](s_g[:, 0]).chunk(2)) + list(self.student["dino"](s_l[:, 0]).chunk(loc.shape[0] // b))
        dino, pairs = 0.0, 0
        for i, q in enumerate(targets):
            for j, v in enumerate(s_views):
                if i != j:
                    dino = dino + torch.sum(-q * F.log_softmax(v / 0.1, dim=-1), dim=-1).mean()
                    pairs += 1
        dino = dino / pairs
        flat = masks.flatten()
        s_patch = self.student["ibot"](s_g[:, 1:].flatten(0, 1)[flat])
        with torch.no_grad():
            t_patch = self.sinkhorn(self.teacher["ibot"](t_g[:, 1:].flatten(0, 1)[flat]), 0.07)
        ibot = torch.sum(-t_patch * F.log_softmax(s_patch / 0.1, dim=-1), dim=-1).mean()
        koleo = 0.0
        for cls in s_g[:, 0].chunk(2):
            z = F.normalize(cls, dim=-1)
            d = torch.cdist(z, z) + torch.eye(len(z), device=z.device) * 1e9
            koleo = koleo - torch.log(d.min(dim=1).values + 1e-8).mean()
        know = F.binary_cross_entropy_with_logits(self.student["know"](s_g[:, 0]), batch["targets"].repeat(2, 1))
        loss = dino + ibot + 0.1 * koleo + know
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 3.0)
        self.opt.step()
        with torch.no_grad():
            for pt, ps in zip(self.teacher.parameters(), self.student.parameters(), strict=True):
                pt.mul_(0.996).add_(ps.detach(), alpha=0.004)
        return loss.item()


class _L2Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=-1)


# --------------------------------------------------------------------------- one row


def run_one(spec: dict, args: argparse.Namespace) -> dict:
    from dermino.pretrain.fast_step import TrainStep
    from dermino.pretrain.flops import peak_tflops
    from dermino.pretrain.trainer import Trainer

    model, batch, precision, compile_, path = spec["model"], spec["batch"], spec["precision"], spec["compile"], spec["path"]
    torch.set_num_threads(args.threads)
    args.tmp = spec.get("tmp", args.tmp)  # rows running in parallel write to folders of their own
    cfg = make_config(model, batch, precision, compile_, args.device, args, pack=path == "packed")
    n = 4 * batch
    df = pd.DataFrame({"image": [f"x{i}.jpg" for i in range(n)], "source": "synthetic",
                       "labels": [f"c{i % N_CLASSES}" for i in range(n)],
                       "label_space": ";".join(f"c{i}" for i in range(N_CLASSES))})
    trainer = Trainer(cfg, df=df)
    dev = trainer.device
    batches = [synthetic_batch(cfg, s) for s in range(2)]
    if dev.type == "cuda":  # what the loader delivers: pinned host memory, copied without blocking
        batches = [{k: v.pin_memory() if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    if path == "versus":  # dermino's fast step and the naive baseline alternating in one process
        return run_versus(spec, args, trainer, batches)
    if path == "naive":
        naive = NaiveDino(model, args.prototypes, dev)
        amp = (torch.autocast(dev.type, dtype=torch.bfloat16) if precision == "bf16" else torch.autocast(dev.type, enabled=False))

        def step(b: dict) -> None:
            with amp:
                naive.step({k: v.to(dev) if torch.is_tensor(v) else v for k, v in b.items()})

        finish = sync
    elif path == "reference":
        for m in trainer.model.modules():
            if hasattr(m, "fused_attn"):
                m.fused_attn = False
        groups = [{k: v for k, v in g.items() if k not in ("fused", "foreach")} for g in trainer.optimizer.param_groups]
        trainer.optimizer = torch.optim.AdamW(groups, lr=0.0, betas=(0.9, 0.999))

        def step(b: dict) -> None:
            trainer.train_step([b])

        finish = sync
    else:  # fast / packed
        fast = TrainStep(trainer)
        last: list[dict] = []

        def step(b: dict) -> None:
            last[:] = [fast([b])]

        def finish() -> None:
            fast.read(last[0])
            sync()

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    timing = time_steps(lambda i: step(batches[i % 2]), finish, args.warmup, args.repeats, args.steps)
    step_s = timing["step_s"]
    ips = batch / step_s
    # CPU seconds this process got per step: on a shared machine, images per CPU-second x threads is
    # what the same threads deliver when they have their cores to themselves
    cpu_step_s = timing["cpu_s_per_step"]
    flops = trainer.flops_per_image
    peak = peak_tflops(dev, precision, args.peak_tflops)
    row = {**spec, "device": str(dev), "crops": f"2x{args.global_size}+{args.n_local}x{args.local_size}",
           **timing, "images_per_s": ips, "gflop_per_image": flops / 1e9,
           "achieved_tflops": ips * flops / 1e12, "peak_tflops": peak, "mfu": ips * flops / 1e12 / peak,
           "threads": args.threads, "load": load_average(),
           "cpu_s_per_step": cpu_step_s, "images_per_cpu_s": batch / cpu_step_s,
           "mfu_of_cpu_time": batch / cpu_step_s * args.threads * flops / 1e12 / peak if dev.type == "cpu" else None}
    if dev.type == "cuda":
        row["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        row["gpu"] = torch.cuda.get_device_name(dev)
    else:
        row["peak_mem_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS
    if dev.type == "cuda" and path == "fast":  # host-device syncs inside one step (should be 0)
        import warnings

        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            step(batches[0])
        torch.cuda.set_sync_debug_mode("default")
        finish()
        row["syncs_in_step"] = sum("synchroniz" in str(w.message) for w in caught)
    if spec.get("count_flops"):
        from torch.utils.flop_counter import FlopCounterMode

        ref = Trainer(make_config(model, batch, "fp32", False, args.device, args), df=df)
        counter = FlopCounterMode(display=False)
        with counter:
            ref.train_step([batches[0]])
        row["counted_gflop_per_image"] = counter.get_total_flops() / batch / 1e9
        row["flops_check"] = row["counted_gflop_per_image"] / row["gflop_per_image"]
    return row


def run_versus(spec: dict, args: argparse.Namespace, trainer, batches: list[dict]) -> dict:
    """Alternate one dermino step and one naive step, so both see the same machine load; report the
    median CPU seconds of each (the fair comparison on a shared machine)."""
    from dermino.pretrain.fast_step import TrainStep

    dev = trainer.device
    naive = NaiveDino(spec["model"], args.prototypes, dev)
    fast = TrainStep(trainer)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=spec["precision"] == "bf16")

    def ours(b: dict) -> None:
        fast.read(fast([b]))

    def theirs(b: dict) -> None:
        with amp:
            naive.step(b)

    cpu: dict[str, list[float]] = {"dermino": [], "naive": []}
    for i in range(args.warmup + args.repeats):
        for name, fn in (("dermino", ours), ("naive", theirs)) if i % 2 == 0 else (("naive", theirs), ("dermino", ours)):
            c0 = time.process_time()
            fn(batches[i % 2])
            if i >= args.warmup:
                cpu[name].append(time.process_time() - c0)
    b = spec["batch"]
    med = {k: statistics.median(v) for k, v in cpu.items()}
    return {**spec, "device": str(dev), "dermino_cpu_s_per_step": med["dermino"], "naive_cpu_s_per_step": med["naive"],
            "dermino_images_per_cpu_s": b / med["dermino"], "naive_images_per_cpu_s": b / med["naive"],
            "speedup": med["naive"] / med["dermino"], "cpu_s_all": cpu, "load": load_average()}


MODEL_NAMES = {"tiny": "ViT-T/14", "small": "ViT-S/14", "base": "ViT-B/14"}


def markdown(paths: list[Path]) -> str:
    """Markdown tables (steps; dermino vs naive alternating) of result files, rows sorted by model."""
    rows = [r for p in paths for r in json.loads(p.read_text())["rows"]]
    order = {m: i for i, m in enumerate(MODEL_NAMES)}
    paths = {p: i for i, p in enumerate(PATHS)}
    rows.sort(key=lambda r: (order.get(r["model"], 9), paths.get(r["path"], 9), r["precision"] != "fp32",
                             r["compile"], r["batch"]))
    out = ["| model | path | prec. | compile | batch | s/step wall | img/s wall | img per CPU-s | GFLOP/img | "
           "counted / analytic | MFU wall | MFU of CPU time | peak mem GiB | warm-up s | load |",
           "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    versus = ["| model | prec. | batch | dermino CPU-s/step | naive timm CPU-s/step | dermino speed-up | load |",
              "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lead = f"| {MODEL_NAMES.get(r['model'], r['model'])} | {r['path']} | {r['precision']} | " \
               f"{'yes' if r['compile'] else 'no'} | {r['batch']} |"
        if "error" in r:
            timeout = re.search(r"timed out after ([\d.]+) seconds", r["error"])
            why = f"timed out (per-row limit {float(timeout.group(1)):.0f} s)" if timeout else r["error"][:150]
            out.append(f"{lead} failed: {why.replace('|', '/')} |" + " |" * 9)
        elif r["path"] == "versus":
            versus.append(f"| {MODEL_NAMES.get(r['model'], r['model'])} | {r['precision']} | {r['batch']} | "
                          f"{r['dermino_cpu_s_per_step']:.2f} ({r['dermino_images_per_cpu_s']:.3f} img/CPU-s) | "
                          f"{r['naive_cpu_s_per_step']:.2f} ({r['naive_images_per_cpu_s']:.3f} img/CPU-s) | "
                          f"x{r['speedup']:.2f} | {r['load']} |")
        else:
            check = f"{r['flops_check']:.2f}" if "flops_check" in r else "-"
            mfu_cpu = f"{r['mfu_of_cpu_time']:.1%}" if r.get("mfu_of_cpu_time") is not None else "-"
            out.append(f"{lead} {r['step_s']:.2f} | {r['images_per_s']:.3f} | {r['images_per_cpu_s']:.3f} | "
                       f"{r['gflop_per_image']:.1f} | {check} | {r['mfu']:.1%} | {mfu_cpu} | {r['peak_mem_gib']:.2f} | "
                       f"{r['warmup_s']:.0f} | {r['load']} |")
    return "\n".join(out) + ("\n\n" + "\n".join(versus) if len(versus) > 2 else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", choices=sorted(GRIDS), default=None, help="default: gpu when CUDA is available")
    ap.add_argument("--only", default="", help="comma list of row numbers of the grid to run")
    ap.add_argument("--rows", default="", help="an ad-hoc grid instead: MODEL:BATCH:PRECISION:eager|compile:PATH,...")
    ap.add_argument("--global-size", type=int, default=224)
    ap.add_argument("--local-size", type=int, default=98)
    ap.add_argument("--n-local", type=int, default=8)
    ap.add_argument("--prototypes", type=int, default=65536)
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default: 1 on CPU, 3 on GPU)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="steps per timed repeat (default: 1 on CPU, 5 on GPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=1, help="1 on a shared box: spinning OpenMP threads stall when descheduled")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--timeout", type=int, default=900, help="seconds per row")
    ap.add_argument("--parallel", type=int, default=1, help="rows at once (CPU: their CPU-second figures stay valid)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markdown", type=Path, nargs="+", default=None,
                    help="print the result files' rows as markdown tables and exit (runs nothing)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--tmp", default="/tmp/dermino_bench", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.markdown:
        print(markdown(args.markdown))
        return
    gpu = args.grid == "gpu" or (args.grid is None and torch.cuda.is_available())
    args.warmup = args.warmup if args.warmup is not None else (3 if gpu else 1)
    args.steps = args.steps if args.steps is not None else (5 if gpu else 1)
    if args.one:
        print("ROW " + json.dumps(run_one(json.loads(args.one), args)), flush=True)
        return
    grid_name = "custom" if args.rows else (args.grid or ("gpu" if gpu else "cpu"))
    grid = parse_rows(args.rows) if args.rows else GRIDS[grid_name]
    picked = [int(i) for i in args.only.split(",") if i] or list(range(len(grid)))
    rows = []
    print(f"grid {grid_name}, crops 2x{args.global_size}+{args.n_local}x{args.local_size}, {args.prototypes} prototypes, "
          f"{args.warmup} warm-up + median of {args.repeats} x {args.steps} step(s); load {load_average()}")
    head = (f"{'#':>2} {'model':<6}{'path':<10}{'prec':<5}{'comp':<5}{'batch':>5}{'img/s':>8}{'s/step':>8}"
            f"{'GFLOP/img':>10}{'check':>7}{'TFLOP/s':>9}{'MFU':>7}{'img/CPUs':>9}{'MFU/CPU':>8}{'mem GiB':>8}{'warm-up s':>10}  load")
    print(head)
    def run_row(i: int) -> dict:
        model, batch, precision, compile_, path = grid[i]
        spec = {"tmp": str(Path(args.tmp) / f"row{i}"), "model": model, "batch": batch, "precision": precision, "compile": compile_, "path": path,
                "count_flops": path == "fast" and i == min(j for j in picked if grid[j][0] == model and grid[j][4] == "fast")}
        cmd = [sys.executable, __file__, "--one", json.dumps(spec), *sys.argv[1:]]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
            found = [ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")]
            if not found:
                tail = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()][-2:]
                raise RuntimeError(" | ".join(tail) or f"exit code {proc.returncode}, no output")
            return {"row": i, **json.loads(found[-1][4:])}
        except (subprocess.TimeoutExpired, RuntimeError) as exc:
            return {"row": i, **spec, "error": f"{type(exc).__name__}: {exc}"}

    # rows in parallel only where timing is per process anyway (CPU-seconds); GPU rows one at a time
    with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
        for r in pool.map(run_row, picked):
            rows.append(r)
            i = r["row"]
            lead = f"{i:>2} {r['model']:<6}{r['path']:<10}{r['precision']:<5}{str(r['compile'])[0]:<5}{r['batch']:>5}"
            if "error" in r:
                print(f"{lead}  FAILED {r['error'][:200]}", flush=True)
                continue
            if r["path"] == "versus":
                print(f"{lead}  alternating in one process: dermino {r['dermino_images_per_cpu_s']:.3f} img/CPU-s, "
                      f"naive timm {r['naive_images_per_cpu_s']:.3f} img/CPU-s -> dermino x{r['speedup']:.2f}  "
                      f"{r['load']}", flush=True)
                continue
            check = f"{r['flops_check']:.2f}" if "flops_check" in r else "-"
            print(f"{lead}{r['images_per_s']:8.2f}{r['step_s']:8.2f}{r['gflop_per_image']:10.1f}{check:>7}"
                  f"{r['achieved_tflops']:9.3f}{r['mfu']:7.1%}{r['images_per_cpu_s']:9.2f}{(r['mfu_of_cpu_time'] or 0):8.1%}"
                  f"{r['peak_mem_gib']:8.2f}{r['warmup_s']:10.1f}  {r['load']}", flush=True)
    dev = "cuda" if gpu else "cpu"
    path = args.json or RESULTS / f"pretrain_throughput_{dev}.json"
    write_json({"grid": grid_name, "rows": rows, "args": {k: str(v) for k, v in vars(args).items()}}, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
