"""The study web app: the study routers, the study pages and the serve UI's shared components.

The AI's help was computed at ``study create``, so the study server loads no model. The
study can also live inside the main app (:func:`mount_study`, ``dermino serve --study``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

import dermino
import dermino.serve
from dermino.serve.body import MAX_BODY, BodyLimit, install_validation_handler
from dermino.study.routes import admin_router, reader_router
from dermino.study.store import StudyStore

STUDY_STATIC = Path(__file__).parent / "static"
#: the serve UI's static folder (components.js, style.css); not imported from serve.app, which loads torch
STATIC_DIR = Path(dermino.serve.__file__).parent / "static"


def mount_study(app: FastAPI, study: StudyStore) -> FastAPI:
    """Add the study's API (``/study/api``) and pages (``/study``) to ``app``.

    Used by the stand-alone study server and by ``dermino serve --study``, which hosts the
    study next to the diagnosis service on one port. The caller provides ``/static``.
    """
    app.state.study = study
    install_validation_handler(app)  # a NaN in an answer is a 422, not a 500
    app.include_router(reader_router)
    app.include_router(admin_router)
    app.mount("/study", StaticFiles(directory=STUDY_STATIC, html=True), name="study")
    return app


def create_study_app(study: StudyStore, max_body: int = MAX_BODY) -> FastAPI:
    """The stand-alone study server; request bodies over ``max_body`` get 413 before they are read
    (the same limit as ``dermino serve``, which applies its own when it hosts the study)."""
    app = FastAPI(title="dermino reader study", version=dermino.__version__,
                  description="Two-round reader study (unaided, then with the AI's help). Research tool.")
    app.add_middleware(BodyLimit, max_body=max_body)
    mount_study(app, study)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")  # components.js, style.css

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/study/reader.html")

    return app
