"""Throughput of ``dermino serve --workers N`` against the bare batched model, on loopback.

For each worker count, starts ``dermino serve --workers N`` as a subprocess on 127.0.0.1 (a
free port) and posts real images to /classify (``--requests``, ``--concurrency`` at a time,
kept-alive connections like a load balancer's pool); reports requests per second, p50 / p95 /
p99 latency, errors, the requests each worker batched and the server's memory (all processes).
The same classifier is also called directly on the decoded images in batches of
``--max-batch`` with ``--threads`` torch threads, before and after the server runs (the "bare"
throughput); each row's ratio is its requests per second over the mean bare images per second.
Each worker gets ``--threads`` torch threads, so the one-worker row does the same compute as
the bare model, plus HTTP, multipart parsing, JPEG decoding and batching.

Without ``--classifier`` a random-init classifier of ``--arch`` at ``--image-size`` is saved to a
scratch folder (the machinery, not a diagnostic model). Writes benchmarks/results/serve_workers.json.

    python benchmarks/serve_workers.py [--classifier DIR] [--images DIR ...] [--workers 1 2] \
        [--requests 1000 --concurrency 32]
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from _common import benchmark_parser, report, start
from serve_load import free_port, run_load

from dermino.data.sample import sample_root

LABELS = ["actinic keratosis", "basal cell carcinoma", "benign keratosis", "dermatofibroma",
          "melanocytic nevus", "melanoma", "vascular lesion"]


def random_classifier(out: Path, arch: str, image_size: int) -> Path:
    """A saved classifier on a random-init backbone: the serving cost of a real one of that size."""
    import torch

    from dermino.classifier.model import Classifier, backbone_spec, save_classifier
    from dermino.features import EmbedConfig, eval_transform
    from dermino.models import create

    torch.manual_seed(0)
    backbone = create(arch, img_size=image_size)
    clf = Classifier(backbone, LABELS, eval_transform(backbone, EmbedConfig(image_size=image_size)), "cls",
                     backbone_spec=backbone_spec(arch, backbone, {"img_size": image_size}))
    return save_classifier(clf.eval(), out)


def bare_throughput(folder: str | Path, images: list, batch: int, batches: int) -> float:
    """Images per second of ``Classifier.predict`` (transform + forward) on decoded images, in batches."""
    from dermino.classifier.model import load_classifier

    clf = load_classifier(folder)
    chunks = [[images[(i * batch + j) % len(images)] for j in range(batch)] for i in range(batches)]
    clf.predict(chunks[0])  # warm-up
    t = time.perf_counter()
    for chunk in chunks:
        clf.predict(chunk)
    return batch * batches / (time.perf_counter() - t)


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and its children, MiB (shared pages counted in each)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids += [int(p) for p in (task / "children").read_text().split()]
    total = 0.0
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def per_worker(url: str, workers: int, timeout_s: float = 20) -> dict[int, dict]:
    """Each worker's micro-batching counters, read from /health on new connections until all answered."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < workers and time.monotonic() < deadline:
        h = httpx.get(f"{url}/health", timeout=10).json()
        seen[h["worker"]["pid"]] = {"index": h["worker"]["index"], **h["batching"]}
    return seen


def serve_row(args, folder: str | Path, files: list[tuple[str, bytes]], workers: int) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "dermino.cli", "serve", "--classifier", str(folder), "--host", "127.0.0.1",
           "--port", str(port), "--workers", str(workers), "--torch-threads", str(args.threads),
           "--max-batch", str(args.max_batch)]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not _up(url):
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"server did not start: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")
            time.sleep(0.5)
        per_worker(url, workers, 120)  # the other workers may still be loading the model
        # warm-up: each worker's first batches pay for lazy initialisation
        asyncio.run(run_load(url, files, 4 * args.concurrency, args.concurrency, "/classify"))
        before = per_worker(url, workers)
        load = asyncio.run(run_load(url, files, args.requests, args.concurrency, "/classify"))
        after = per_worker(url, workers)
        rss = tree_rss_mib(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=60)
    batched = {str(v["index"]): int(v["items"] - before.get(pid, {"items": 0})["items"]) for pid, v in after.items()}
    return {"workers": workers, "requests": load["requests"], "concurrency": load["concurrency"],
            "req_per_s": load["req_per_s"], "p50_ms": load["p50_ms"], "p95_ms": load["p95_ms"],
            "p99_ms": load["p99_ms"], "max_ms": load["max_ms"], "errors": load["errors"],
            "server_5xx": load["server_5xx"], "first_errors": load["first_errors"],
            "requests_per_worker": batched, "server_rss_mib": rss, "load": os.getloadavg()[0]}


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--classifier", help="a 'dermino classifier train' folder (default: a random-init one)")
    ap.add_argument("--arch", default="dermino_vit_small_14", help="backbone of the random-init classifier")
    ap.add_argument("--image-size", type=int, default=112, help="input size of the random-init classifier (default 112)")
    ap.add_argument("--images", nargs="+", help="image files or folders (default: the bundled HAM10000 sample)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--bare-batches", type=int, default=20, help="batches timed for the bare model (each time)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups: stop the server, remove the scratch
    if not 0 < args.requests <= 20_000 or not 0 < args.concurrency <= 200 or not all(0 < w <= 16 for w in args.workers):
        sys.exit("keep the load bounded: 0 < requests <= 20000, 0 < concurrency <= 200, 0 < workers <= 16")
    start(args)
    from PIL import Image

    paths: list[Path] = []
    for item in map(Path, args.images or [sample_root() / "ham10000" / "images"]):
        paths += sorted(item.glob("*.jpg"))[:64] if item.is_dir() else [item]
    paths = paths[:64]
    files = [(p.name, p.read_bytes()) for p in paths]
    decoded = [Image.open(p).convert("RGB") for p in paths]
    with tempfile.TemporaryDirectory(prefix="serve_workers_") as tmp:
        folder = args.classifier or random_classifier(Path(tmp) / "clf", args.arch, args.image_size)
        bare = [bare_throughput(folder, decoded, args.max_batch, args.bare_batches)]
        print(f"bare model: {bare[0]:.1f} img/s", flush=True)
        rows = []
        for n in args.workers:
            rows.append(serve_row(args, folder, files, n))
            print(f"{n} worker(s): {rows[-1]['req_per_s']:.1f} req/s", flush=True)
        bare.append(bare_throughput(folder, decoded, args.max_batch, args.bare_batches))
    bare_mean = sum(bare) / len(bare)
    for r in rows:
        r["ratio_to_bare"] = r["req_per_s"] / bare_mean
    columns = [("workers", "workers", "d"), ("requests", "requests", "d"), ("concurrency", "conc", "d"),
               ("req_per_s", "req/s", ".1f"), ("ratio_to_bare", "/ bare", ".2f"), ("p50_ms", "p50 ms", ".0f"),
               ("p95_ms", "p95 ms", ".0f"), ("p99_ms", "p99 ms", ".0f"), ("errors", "errors", "d"),
               ("server_rss_mib", "RSS MiB", ".0f"), ("load", "load", ".1f")]
    title = (f"dermino serve /classify vs the bare batched model ({bare_mean:.1f} img/s: before {bare[0]:.1f}, "
             f"after {bare[1]:.1f}); {len(paths)} images; classifier {args.classifier or args.arch}")
    report(__file__, args, title, rows, columns, bare_img_per_s=bare, bare_mean=bare_mean, cpu_count=os.cpu_count(),
           images=[p.name for p in paths])
    if any(r["errors"] for r in rows):
        sys.exit("errors: " + "; ".join(str(r["first_errors"]) for r in rows if r["errors"]))


if __name__ == "__main__":
    main()
