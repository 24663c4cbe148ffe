"""``dermino serve``: the API and web UI on uvicorn."""

from __future__ import annotations

import argparse
import logging

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
    p.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from dermino.serve.app import create_app
    from dermino.serve.service import Service
    from dermino.serve.uploads import UploadLimits

    limits = UploadLimits(max_bytes=int(args.max_upload_mb * 1024 * 1024), max_pixels=args.max_pixels,
                          max_side=args.max_side, max_aspect=args.max_aspect, save_dir=args.save_uploads)
    service = Service.from_folders(args.classifier, args.index, args.segmenter, device=args.device,
                                   limits=limits, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: reachable from other machines; put it behind TLS and authentication",
                    args.host)
    app = create_app(service)
    if args.study:
        from dermino.study.app import mount_study
        from dermino.study.store import StudyStore

        store = StudyStore(args.study)
        mount_study(app, store)
        print(f"study {store.name!r}: {store.n_cases} cases; "
              f"http://{args.host}:{args.port}/study/reader.html#token=...", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
