"""``dermino serve``: the API and web UI on uvicorn."""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dermino.serve.workers import ServeSettings
    from dermino.study.store import StudyStore

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="FastAPI service + web UI: classify, similar cases, attention, segmentation",
        description="Loads the models once and serves POST /classify /similar /explain /segment /embed, "
        "GET /health /version, the OpenAPI schema at /docs, and the web UI at /. Research tool, not a "
        "medical device.",
    )
    p.add_argument("--classifier", required=True, help="a 'dermino classifier train' folder")
    p.add_argument("--index", help="a 'dermino index build' folder (enables /similar)")
    p.add_argument("--segmenter", help="a 'dermino segment train' run folder (enables /segment)")
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-upload-mb", type=float, default=15.0, help="largest accepted file (default 15)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest accepted image (default 40 MP)")
    p.add_argument("--max-side", type=int, default=2048,
                   help="longer side the models work on; larger images are shrunk to it (default 2048)")
    p.add_argument("--max-aspect", type=float, default=20.0,
                   help="refuse images whose longer side is more than this many times the shorter (default 20)")
    p.add_argument("--save-uploads", metavar="DIR",
                   help="keep uploaded files in DIR (named by content hash); default: never written to disk")
    p.add_argument("--study", metavar="DIR",
                   help="a 'dermino study create' folder to host on the same port (pages under /study/)")
    p.add_argument("--max-batch", type=int, default=16, help="largest micro-batch of concurrent requests")
    p.add_argument("--max-wait-ms", type=float, default=5.0, help="how long a request waits for batch-mates")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes sharing the port, each with its own copy of the models and its own "
                        "micro-batcher (default 1: one process, as before)")
    p.add_argument("--torch-threads", type=int, default=None,
                   help="torch threads per worker (default: with several workers, the cores divided among them; "
                        "with one, torch's default)")
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dermino.serve.uploads import UploadLimits
    from dermino.serve.workers import ServeSettings, default_torch_threads

    limits = UploadLimits(max_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
                          max_side=args.max_side, max_aspect=args.max_aspect, save_dir=args.save_uploads)
    settings = ServeSettings(
        classifier=args.classifier, index=args.index, segmenter=args.segmenter, study=args.study,
        device=args.device, limits=limits, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
        workers=args.workers,
        torch_threads=default_torch_threads(args.workers) if args.torch_threads is None else args.torch_threads)
    settings.validate()
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: reachable from other machines; put it behind TLS and authentication",
                    args.host)
    if settings.workers > 1:
        return _serve_workers(settings, args.host, args.port)

    from dermino.serve.workers import build_app

    app = build_app(settings)
    if args.study:
        _print_study(app.state.study, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0


def _serve_workers(settings: ServeSettings, host: str, port: int) -> int:
    """Several worker processes: settings checked here once, handed to each worker through the environment."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    import uvicorn

    from dermino.serve.workers import FACTORY, FAILED_FILE, SETTINGS_ENV, preflight

    preflight(settings)
    if settings.study:  # migrations run once, here, not in N workers at the same time
        from dermino.study.store import StudyStore

        _print_study(StudyStore(settings.study), host, port)
    run_dir = tempfile.mkdtemp(prefix="dermino-serve-")
    settings.run_dir, settings.supervisor_pid = run_dir, os.getpid()
    os.environ[SETTINGS_ENV] = settings.to_env()
    print(f"{settings.workers} workers, {settings.torch_threads or 'default'} torch thread(s) each", flush=True)
    try:
        # a worker busy loading a large model must not be taken for a hung one (uvicorn's default is 5 s)
        uvicorn.run(FACTORY, factory=True, workers=settings.workers, host=host, port=port, log_level="info",
                    timeout_worker_healthcheck=60)
        failed = Path(run_dir) / FAILED_FILE
        if failed.is_file():
            raise ValueError(failed.read_text())
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    return 0


def _print_study(store: StudyStore, host: str, port: int) -> None:
    print(f"study {store.name!r}: {store.n_cases} cases; http://{host}:{port}/study/reader.html#token=...", flush=True)
