"""Bounded loopback load test of ``dermino serve``: N /classify requests, C at a time.

Starts the server as a subprocess on 127.0.0.1 (a free port), posts real images, and reports
p50/p95/max latency, requests per second, errors and the server's micro-batch sizes.
Writes benchmarks/results/serve_load_<endpoint>.json.

    python benchmarks/serve_load.py --classifier DIR [--index DIR] --images DIR_OR_FILES...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_load(url: str, files: list[tuple[str, bytes]], n: int, concurrency: int, endpoint: str) -> dict:
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []

    async def one(i: int, client: httpx.AsyncClient) -> None:
        name, data = files[i % len(files)]
        async with sem:
            t = time.perf_counter()
            try:
                r = await client.post(f"{url}{endpoint}", files={"file": (name, data, "image/jpeg")})
                statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:200]}")
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
    return {"endpoint": endpoint, "requests": n, "concurrency": concurrency, "wall_s": wall,
            "req_per_s": n / wall, "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "max_ms": float(lat.max()), "errors": len(errors), "statuses": statuses, "first_errors": errors[:3],
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
        result = asyncio.run(run_load(url, files, args.requests, args.concurrency, args.endpoint))
    finally:
        server.terminate()
        server.wait(timeout=30)
    result["cpu_count"] = os.cpu_count()
    (HERE / "results").mkdir(exist_ok=True)
    name = "serve_load_" + args.endpoint.strip("/").replace("/", "_") + ".json"
    (HERE / "results" / name).write_text(json.dumps(result, indent=2))
    print(f"{'endpoint':<10}{'requests':>9}{'conc':>6}{'req/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'errors':>8}"
          f"{'mean batch':>12}")
    print(f"{result['endpoint']:<10}{result['requests']:>9}{result['concurrency']:>6}{result['req_per_s']:>8.1f}"
          f"{result['p50_ms']:>9.1f}{result['p95_ms']:>9.1f}{result['max_ms']:>9.1f}{result['errors']:>8}"
          f"{result['batching']['mean_batch']:>12}")
    if result["errors"]:
        print("first errors:", *result["first_errors"], sep="\n  ")
        sys.exit(1)


if __name__ == "__main__":
    main()
