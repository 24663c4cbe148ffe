"""Several server processes on one port (``dermino serve --workers N``).

One Python process answers requests on one core at a time for everything the models do not
parallelise (decoding, JSON, the event loop), so N uvicorn worker processes share the
listening socket and the kernel hands each new connection to one of them. uvicorn starts each
worker as a fresh (spawned) process and can only give it an import string, so the settings
travel as JSON in the ``DERMINO_SERVE_SETTINGS`` environment variable, checked once in the
parent (``ServeSettings.validate`` and :func:`preflight`) before any worker starts.

What is per process: the models (each worker loads the files read-only), the micro-batcher
and its statistics, torch's threads. Nothing writable is shared in memory; what a worker writes
is safe with several writers: saved uploads are written atomically under content-hash names,
and the study database serialises writes itself (SQLite WAL with a busy timeout, or PostgreSQL;
its migrations run once, in the parent). Each worker claims a small index (0..N-1, shown by
``/health``) by locking a file in a folder the parent made; a worker that dies drops its lock,
so the replacement uvicorn starts finds the index free again.
"""

from __future__ import annotations

import json
import logging
import os
import signal
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import IO, Annotated

from fastapi import FastAPI

from dermino.config import AtLeast1, Checked, Device, NonEmpty, NonNegative, Range, from_dict, to_dict
from dermino.serve.app import WorkerInfo, create_app
from dermino.serve.uploads import UploadLimits

# uvicorn configures its own loggers in each worker (the root logger there has no handler)
log = logging.getLogger("uvicorn.error")

SETTINGS_ENV = "DERMINO_SERVE_SETTINGS"
#: the import string uvicorn's workers call to build their app
FACTORY = "dermino.serve.workers:worker_app"


@dataclass
class ServeSettings(Checked):
    """Everything a worker needs to build the same app as every other worker."""

    classifier: Annotated[str, NonEmpty()] = ""
    index: str | None = None
    segmenter: str | None = None
    study: str | None = None
    device: Annotated[str, Device()] = "cpu"
    limits: UploadLimits = field(default_factory=UploadLimits)
    max_batch: Annotated[int, AtLeast1] = 16
    max_wait_ms: Annotated[float, NonNegative] = 5.0
    workers: Annotated[int, Range(ge=1, le=64)] = 1
    #: torch intra-op threads per worker; 0 keeps torch's default (all cores, for every worker)
    torch_threads: Annotated[int, Range(ge=0)] = 0
    #: folder of the workers' index locks (made by the parent); empty: every worker is index 0
    run_dir: str = ""
    #: the uvicorn supervisor: a worker that cannot load the models stops it (a restart would fail the same way)
    supervisor_pid: int = 0

    def to_env(self) -> str:
        return json.dumps(to_dict(self))

    @classmethod
    def from_env(cls, text: str) -> ServeSettings:
        settings = from_dict(cls, json.loads(text), where=SETTINGS_ENV)
        settings.validate()
        return settings


def default_torch_threads(workers: int) -> int:
    """The cores shared out among the workers (at least one each); 0 (torch's default) for one worker."""
    return 0 if workers <= 1 else max(1, (os.cpu_count() or 1) // workers)


def preflight(settings: ServeSettings) -> None:
    """Fail in the parent, with one clear error, on what would make every worker fail at start-up.

    Reads only the small JSON descriptions, not the weights, so the parent stays light.
    """
    from dermino.classifier.model import read_classifier_config

    settings.validate()
    read_classifier_config(settings.classifier)
    if settings.index and not (Path(settings.index) / "index.json").is_file():
        raise FileNotFoundError(f"--index {settings.index}: no index.json (is it a 'dermino index build' folder?)")
    if settings.segmenter and not Path(settings.segmenter).is_dir():
        raise FileNotFoundError(f"--segmenter {settings.segmenter}: not a folder")


def build_app(settings: ServeSettings, worker: WorkerInfo | None = None) -> FastAPI:
    """The service app of one process: models loaded, micro-batcher built, the study mounted if asked."""
    from dermino.serve.service import Service

    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    service = Service.from_folders(settings.classifier, settings.index, settings.segmenter, device=settings.device,
                                   limits=settings.limits, max_batch=settings.max_batch,
                                   max_wait_ms=settings.max_wait_ms)
    app = create_app(service, worker=worker)
    if settings.study:
        from dermino.study.app import mount_study
        from dermino.study.store import StudyStore

        mount_study(app, StudyStore(settings.study))
    return app


FAILED_FILE = "failed.txt"  # in run_dir: why a worker could not start (the parent reports it)
_held_lock: IO | None = None  # the open lock file that keeps this worker's index claimed


def claim_index(run_dir: str) -> tuple[int, IO | None]:
    """The lowest index no live worker holds, and the open file whose exclusive lock holds it.

    The lock is on ``run_dir/worker-<i>.lock`` and lasts while the file stays open, so the
    kernel frees the index when a worker dies.
    """
    if not run_dir:
        return 0, None
    import fcntl

    for i in count():
        fh = open(Path(run_dir) / f"worker-{i}.lock", "a")  # noqa: SIM115 - held open on purpose
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        return i, fh
    raise AssertionError("unreachable")


def worker_app() -> FastAPI:
    """uvicorn's factory in each worker process: the settings from the environment, an index, the app.

    A worker that cannot load the models stops the whole server (a restart would fail the same
    way, and uvicorn would restart it forever); the parent then exits with the reason.
    """
    global _held_lock
    settings = ServeSettings.from_env(os.environ[SETTINGS_ENV])
    index, _held_lock = claim_index(settings.run_dir)
    worker = WorkerInfo(index=index, workers=settings.workers)
    try:
        app = build_app(settings, worker)
    except Exception as exc:
        log.exception("worker %d (pid %d) could not start; stopping the server", index, os.getpid())
        if settings.run_dir:
            (Path(settings.run_dir) / FAILED_FILE).write_text(f"worker {index} could not start: {exc}")
        if settings.supervisor_pid and os.getppid() == settings.supervisor_pid:
            os.kill(settings.supervisor_pid, signal.SIGTERM)
        raise
    log.info("worker %d of %d ready (pid %d)", index, settings.workers, os.getpid())
    return app
