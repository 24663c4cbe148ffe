"""Data pipeline throughput: decode + full multi-crop, from original files and from the image cache.

Per-core numbers are images per CPU-second of one single-threaded process (``time.process_time``),
which is what one DataLoader worker delivers on an idle core and is far less sensitive to other
jobs on a shared machine than wall time; wall images/s are printed beside them, with the load.
Crops follow the paper: 2 global 224 px + 8 local 98 px views.

Sources (real images only):

- ``original``: the manifest's files as they are (the bundled sample, or ``--manifest``);
- ``original-600x450``: the same HAM10000 images bicubic-upsampled to HAM10000's published
  600x450 and saved as JPEG q90 -- a stand-in for the full-size originals, whose decode cost
  scales with pixels (use ``--manifest`` on real full-size files to measure those directly);
- ``cache-png`` / ``cache-jpg``: ``dermino data cache --size 256`` of the 600x450 stand-ins.

Modes: ``loader`` (crops and colour in the worker, PIL/torchvision) and ``device`` (the worker
only crops, ``crops.photometric=device``; the colour ops then run batched on the training device,
whose CPU cost is printed separately for when that device is the CPU).

    python benchmarks/data_pipeline.py                 # ~3-6 min on a shared 2-core box
    python benchmarks/data_pipeline.py --manifest my_archive.csv --images 200
Writes benchmarks/results/data_pipeline.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import RESULTS, load_average, write_json
from PIL import Image

from dermino.data.cache import ImageCache, build_cache, plan_images
from dermino.data.datasets import MultiCropCollate, PretrainDataset, ResumableSampler
from dermino.data.images import read_rgb
from dermino.data.manifest import read_manifest, write_manifest
from dermino.data.masking import MaskingConfig
from dermino.data.photometric import apply_photometric, multicrop_transform
from dermino.data.sample import sample_manifests
from dermino.data.transforms import CropsConfig


def upsampled_copies(manifest: Path, out: Path, size: tuple[int, int], limit: int) -> Path:
    """Stand-ins for full-size originals: real images resized to ``size``, JPEG q90, with a manifest."""
    df = read_manifest(manifest).head(limit).copy()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, p in enumerate(plan_images([manifest])[:limit]):
        dst = out / f"{i:05d}.jpg"
        if not dst.exists():
            read_rgb(p).resize(size, Image.BICUBIC).save(dst, quality=90)
        paths.append(str(dst))
    df["image"] = paths
    return write_manifest(df, out / "manifest.csv", root="/")


def per_core(reader, paths: list[str], transform, repeats: int) -> dict:
    """Median images per CPU-second (and per wall-second) of decode + transform, one thread."""
    for p in paths[:3]:  # warm-up
        transform(reader(p))
    cpu_rates, wall_rates = [], []
    for r in range(repeats):
        torch.manual_seed(r)
        c0, w0 = time.process_time(), time.perf_counter()
        for p in paths:
            transform(reader(p))
        cpu_rates.append(len(paths) / (time.process_time() - c0))
        wall_rates.append(len(paths) / (time.perf_counter() - w0))
    return {"per_core": statistics.median(cpu_rates), "wall": statistics.median(wall_rates),
            "per_core_all": cpu_rates}


def device_finish_cost(cache: ImageCache, paths: list[str], cfg: CropsConfig, repeats: int) -> float:
    """CPU ms per image of the batched colour ops (what crops.photometric=device costs on a CPU device)."""
    tf = multicrop_transform(CropsConfig(**{**cfg.__dict__, "photometric": "device"}))
    samples = [tf(cache.read(p)) for p in paths[:16]]
    g = torch.stack([v for s in samples for v in s["global"]])
    gp = torch.cat([s["global_photo"] for s in samples])
    loc = torch.stack([v for s in samples for v in s["local"]])
    lp = torch.cat([s["local_photo"] for s in samples])
    times = []
    for _ in range(repeats + 1):
        c0 = time.process_time()
        apply_photometric(g, gp, cfg.mean, cfg.std)
        apply_photometric(loc, lp, cfg.mean, cfg.std)
        times.append((time.process_time() - c0) / len(samples) * 1000)
    return statistics.median(times[1:])


def _cpu_seconds() -> float:
    """CPU time of this process plus its finished children (DataLoader workers, once joined)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def loader_scaling(df, reader, cfg: CropsConfig, workers: int, n: int, batch: int) -> tuple[float, float]:
    """(wall images/s, images per CPU-second of all processes) through a DataLoader with ``workers``
    processes, collate and iBOT masks included; the CPU figure counts worker start-up and IPC too."""
    ds = PretrainDataset(df, multicrop_transform(cfg), reader=reader)
    sampler = ResumableSampler(len(df), seed=0, epoch_size=n + 2 * batch)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, sampler=sampler, num_workers=workers,
                                         collate_fn=MultiCropCollate(14, MaskingConfig()), drop_last=True)
    c0 = _cpu_seconds()
    it = iter(loader)
    total = len(next(it)["rows"])  # start-up and warm-up batch
    t0, seen = time.perf_counter(), 0
    for b in it:
        seen += len(b["rows"])
        if seen >= n:
            break
    wall = seen / (time.perf_counter() - t0)
    if hasattr(it, "_shutdown_workers"):  # join the workers now, so their CPU time is counted
        it._shutdown_workers()
    del it
    return wall, (total + seen) / (_cpu_seconds() - c0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--manifest", type=Path, default=None, help="default: the bundled HAM10000 sample")
    ap.add_argument("--images", type=int, default=40, help="images per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=256, help="cache resolution (shorter side)")
    ap.add_argument("--workers", default="1,2", help="DataLoader worker counts for the scaling rows")
    ap.add_argument("--scaling-images", type=int, default=64)
    ap.add_argument("--json", type=Path, default=RESULTS / "data_pipeline.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cfg = CropsConfig()  # the paper's: 2 x 224 + 8 x 98
    rows, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        manifest = args.manifest or sample_manifests(tmp / "m")["ham10000"]
        n = args.images
        big = upsampled_copies(manifest, tmp / "big", (600, 450), n)
        caches = {fmt: tmp / f"cache-{fmt}" for fmt in ("png", "jpg")}
        for fmt, out in caches.items():
            build_cache([big], out, size=args.size, fmt=fmt, workers=2, progress=False)  # type: ignore[arg-type]
        sources = {
            "original": (read_rgb, plan_images([manifest])[:n]),
            "original-600x450": (read_rgb, plan_images([big])[:n]),
            "cache-png": (ImageCache(caches["png"]), plan_images([big])[:n]),
            "cache-jpg": (ImageCache(caches["jpg"]), plan_images([big])[:n]),
        }
        size0 = read_rgb(sources["original"][1][0]).size
        print(f"load average {load_average()}  |  crops 2x{cfg.global_size} + {cfg.n_local}x{cfg.local_size}  |  "
              f"{n} images x {args.repeats} repeats, median  |  original files {size0[0]}x{size0[1]}")
        print(f"{'source':<18}{'mode':<8}{'img/s per core':>16}{'wall img/s':>12}{'MB/img':>8}")
        for name, (reader, paths) in sources.items():
            for mode in ("loader", "device"):
                tf = multicrop_transform(CropsConfig(**{**cfg.__dict__, "photometric": mode}))
                r = per_core(reader, paths, tf, args.repeats)
                mb = (sum(os.path.getsize(p) for p in paths) / len(paths) / 2**20 if name.startswith("original")
                      else sum(f.stat().st_size for f in caches[name[6:]].glob("*.tar")) / len(paths) / 2**20)
                rows.append({"source": name, "mode": mode, **r, "mb_per_image": mb, "load": load_average()})
                print(f"{name:<18}{mode:<8}{r['per_core']:16.1f}{r['wall']:12.1f}{mb:8.3f}", flush=True)
        finish = device_finish_cost(sources["cache-png"][0], sources["cache-png"][1], cfg, args.repeats)
        print(f"device-side colour ops when the device is this CPU: {finish:.1f} ms CPU per image "
              f"(on a GPU: batched, negligible)")
        scaling = []
        df = read_manifest(big)
        df["image"] = plan_images([big])
        for mode in ("loader", "device"):
            for w in (int(x) for x in args.workers.split(",")):
                ips, per_cpu = loader_scaling(df, sources["cache-jpg"][0],
                                              CropsConfig(**{**cfg.__dict__, "photometric": mode}), w, args.scaling_images, 16)
                scaling.append({"source": "cache-jpg", "mode": mode, "workers": w, "wall_images_per_s": ips,
                                "images_per_cpu_s": per_cpu, "load": load_average()})
                print(f"DataLoader cache-jpg {mode:<7} workers={w}: {ips:7.1f} img/s wall, {per_cpu:6.1f} img per "
                      f"CPU-s of all processes (load {load_average()})", flush=True)
    out = {"rows": rows, "scaling": scaling, "device_finish_ms_per_image_on_cpu": finish,
           "cpu": os.cpu_count(), "seconds": time.perf_counter() - start, "args": {k: str(v) for k, v in vars(args).items()}}
    write_json(out, args.json)
    print(f"wrote {args.json} ({out['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
