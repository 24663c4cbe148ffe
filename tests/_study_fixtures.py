"""Builders for the reader-study tests: a small study on bundled HAM10000 images, on SQLite or on
a real PostgreSQL server (``DERMINO_TEST_POSTGRES_URL``: a role that may create databases; CI
starts the server and sets it, elsewhere the PostgreSQL cases skip and say why)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from _serve_fixtures import tiny_classifier
from dermino.data.sample import sample_manifests
from dermino.serve.index_build import build_index
from dermino.study.setup import Created, create_study


def readers_csv(path: Path, readers: list[tuple[str, str]]) -> Path:
    path.write_text("name,experience\n" + "".join(f"{n},{e}\n" for n, e in readers))
    return path


POSTGRES_ENV = "DERMINO_TEST_POSTGRES_URL"
BACKENDS = ["sqlite", "postgresql"]


@contextlib.contextmanager
def database(kind: str) -> Iterator[str | None]:
    """None for SQLite (the study folder's own file), else the URL of a fresh PostgreSQL database,
    dropped afterwards."""
    if kind == "sqlite":
        yield None
        return
    admin = os.environ.get(POSTGRES_ENV, "")
    if not admin:
        pytest.skip(f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql+psycopg://user:pw@127.0.0.1:5432/postgres); "
                    "CI installs and starts the server and sets it")
    from sqlalchemy import create_engine, text

    engine = create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        conn = engine.connect()
    except Exception as exc:  # noqa: BLE001 (any driver error means: no server to test against)
        pytest.skip(f"PostgreSQL at {POSTGRES_ENV} is unreachable: {str(exc).splitlines()[0]}")
    name = f"dermino_test_{uuid.uuid4().hex[:12]}"
    conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.close()
        engine.dispose()


def make_study(tmp: Path, n_cases: int = 4, readers: list[tuple[str, str]] | None = None,
               index: bool = True, db_url: str | None = None) -> Created:
    clf = tiny_classifier()
    ham = sample_manifests(tmp / "m")["ham10000"]
    idx = build_index(clf, ham, tmp / "index", cache_dir=str(tmp / "c"), progress=False) if index else None
    rows = readers or [("alice", "senior"), ("bob", "junior")]
    return create_study(ham, n_cases, readers_csv(tmp / "readers.csv", rows), clf, idx, tmp / "study", seed=0,
                        db_url=db_url)
