"""Bounded loopback load test of ``dermino serve``: N /classify requests, C at a time.

Starts the server as a subprocess on 127.0.0.1 (a free port), posts real images, and reports
p50/p95/max latency, requests per second, errors and the server's micro-batch sizes.
``--hostile-share F`` mixes in hostile uploads (thin strips that once cost gigabytes, a
decompression bomb, truncated and non-image bytes): they must get a 4xx, never a 5xx, and the
server's resident memory before / after / peak is reported.
Writes benchmarks/results/serve_load_<endpoint>[_hostile].json.

    python benchmarks/serve_load.py --classifier DIR [--index DIR] --images DIR_OR_FILES... [--hostile-share 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (180, 120, 90)).save(buf, "PNG")
    return buf.getvalue()


def hostile_uploads() -> list[tuple[str, bytes]]:
    """Uploads a hostile user sends: each must be answered 4xx (or a correct 200), never 5xx."""
    bomb = io.BytesIO()
    Image.new("L", (20000, 20000)).save(bomb, "PNG")  # 400 MP of zeros in a few hundred kB
    real = _png(300, 200)
    return [("strip_1x100000.png", _png(1, 100_000)), ("strip_100000x1.png", _png(100_000, 1)),
            ("thin_600x1.png", _png(600, 1)), ("thin_1x5000.png", _png(1, 5000)), ("bomb.png", bomb.getvalue()),
            ("truncated.png", real[: len(real) // 2]), ("not_an_image.jpg", b"%PDF-1.4 not an image" * 50),
            ("empty.jpg", b"")]


def _rss_mib(pid: int) -> dict[str, float]:
    """Resident memory (VmRSS) and its peak so far (VmHWM) of a process, MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


async def run_load(url: str, files: list[tuple[str, bytes]], n: int, concurrency: int, endpoint: str,
                   hostile: list[tuple[str, bytes]] | None = None, hostile_share: float = 0.0) -> dict:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    n_hostile = int(round(n * hostile_share)) if hostile else 0
    every = n / n_hostile if n_hostile else 0

    async def one(i: int, client: httpx.AsyncClient) -> None:
        is_hostile = bool(n_hostile) and int(i % every) == 0 and i // every < n_hostile
        name, data = hostile[int(i // every) % len(hostile)] if is_hostile else files[i % len(files)]
        async with sem:
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}{endpoint}", files={"file": (name, data, "image/jpeg")})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code >= 500 or (r.status_code != 200 and not is_hostile):
                    errors.append(f"{r.status_code} ({name}): {r.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            latencies.append((time.perf_counter() - t) * 1000)

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        start = time.perf_counter()
        await asyncio.gather(*(one(i, client) for i in range(n)))
        wall = time.perf_counter() - start
        health = (await client.get(f"{url}/health")).json()
    lat = np.array(latencies)
    return {"endpoint": endpoint, "requests": n, "hostile_requests": n_hostile, "concurrency": concurrency,
            "server_5xx": sum(v for k, v in statuses.items() if k >= 500), "wall_s": wall,
            "req_per_s": n / wall, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "max_ms": float(lat.max()), "errors": len(errors), "statuses": statuses, "first_errors": errors[:3],
            "batching": health["batching"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--classifier", required=True)
    ap.add_argument("--index")
    ap.add_argument("--images", nargs="+", required=True, help="image files or a folder (the first 50 are used)")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=20)
    ap.add_argument("--endpoint", default="/classify")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--hostile-share", type=float, default=0.0, help="share of hostile uploads in the mix (0-1)")
    args = ap.parse_args()
    if not 0 < args.requests <= 20_000 or not 0 < args.concurrency <= 200:
        sys.exit("keep the load bounded: 0 < requests <= 20000, 0 < concurrency <= 200")
    paths: list[Path] = []
    for item in map(Path, args.images):
        paths += sorted(item.glob("*.jpg"))[:50] if item.is_dir() else [item]
    files = [(p.name, p.read_bytes()) for p in paths[:50]]
    port = free_port()
    cmd = [sys.executable, "-m", "dermino.cli", "serve", "--classifier", args.classifier, "--host", "127.0.0.1",
           "--port", str(port), "--max-batch", str(args.max_batch)] + (["--index", args.index] if args.index else [])
    server = subprocess.Popen(cmd, env={**os.environ}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"server did not start: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")
            time.sleep(0.3)
        before = _rss_mib(server.pid)
        hostile = hostile_uploads() if args.hostile_share > 0 else None
        result = asyncio.run(run_load(url, files, args.requests, args.concurrency, args.endpoint, hostile,
                                      args.hostile_share))
        after = _rss_mib(server.pid)
        result["rss_mib"] = {"before": before["VmRSS"], "after": after["VmRSS"], "peak": after["VmHWM"]}
        result["loadavg"] = os.getloadavg()
    finally:
        server.terminate()
        server.wait(timeout=30)
    result["cpu_count"] = os.cpu_count()
    (HERE / "results").mkdir(exist_ok=True)
    name = "serve_load_" + args.endpoint.strip("/").replace("/", "_") + ("_hostile" if args.hostile_share else "") + ".json"
    (HERE / "results" / name).write_text(json.dumps(result, indent=2))
    print(f"{'endpoint':<10}{'requests':>9}{'conc':>6}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'errors':>8}"
          f"{'mean batch':>12}")
    print(f"{result['endpoint']:<10}{result['requests']:>9}{result['concurrency']:>6}{result['req_per_s']:>8.1f}"
          f"{result['p50_ms']:>9.1f}{result['p95_ms']:>9.1f}{result['max_ms']:>9.1f}{result['errors']:>8}"
          f"{result['batching']['mean_batch']:>12}")
    print(f"hostile uploads {result['hostile_requests']}, statuses {result['statuses']}, 5xx {result['server_5xx']}; "
          f"server RSS MiB before {result['rss_mib']['before']:.0f}, after {result['rss_mib']['after']:.0f}, "
          f"peak {result['rss_mib']['peak']:.0f}; load {result['loadavg']}")
    if result["errors"]:
        print("first errors:", *result["first_errors"], sep="\n  ")
        sys.exit(1)


if __name__ == "__main__":
    main()
