"""``create_app``: the FastAPI application (API + web UI), built around one ``Service``.

Designed to be extended: pass more routers (e.g. a reader study) and more static pages;
each page of the UI reuses the components in ``static/components.js``. The service is on
``app.state.service`` for any router that needs the models, and which worker process this
is on ``app.state.worker`` (``dermino serve --workers N`` runs N such apps, one per process).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.formparsers import MultiPartParser

import dermino
from dermino.serve.body import FORM_OVERHEAD, BodyLimit, install_validation_handler
from dermino.serve.routes import router as api_router
from dermino.serve.service import Service

STATIC_DIR = Path(__file__).parent / "static"


@dataclass(frozen=True)
class WorkerInfo:
    """Which of the server's worker processes this app runs in (``/health`` reports it)."""

    index: int = 0
    workers: int = 1


def create_app(
    service: Service,
    routers: Sequence[APIRouter] = (),
    static_dirs: dict[str, str | Path] | None = None,
    ui: bool = True,
    worker: WorkerInfo | None = None,
) -> FastAPI:
    """The app: the API at the root, the UI at ``/`` and ``/static``; extra routers and static folders mounted too."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        service.close()

    app = FastAPI(
        title="dermino",
        version=dermino.__version__,
        description="Research tool, not a medical device. Diagnosis suggestions with calibrated "
        "probabilities, similar reference cases, attention maps and lesion masks.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.worker = worker or WorkerInfo()
    install_validation_handler(app)
    # Starlette spools file parts above 1 MB to a temporary FILE; keep accepted uploads in memory
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, service.limits.max_bytes + FORM_OVERHEAD)
    app.add_middleware(BodyLimit, max_body=service.limits.max_bytes + FORM_OVERHEAD)
    app.include_router(api_router)
    for r in routers:
        app.include_router(r)
    if ui:
        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

        @app.get("/", include_in_schema=False)
        def index() -> FileResponse:
            return FileResponse(STATIC_DIR / "index.html")

    for prefix, folder in (static_dirs or {}).items():
        app.mount(prefix, StaticFiles(directory=folder, html=True), name=prefix.strip("/") or "root")
    return app
