"""Engine, sessions and migrations: SQLite (WAL) by default, any SQLAlchemy URL otherwise.

WAL + ``synchronous=FULL`` because an answer must survive a crash the moment the API has
acknowledged it. The schema is created and upgraded by Alembic on every start (the
``alembic upgrade head`` equivalent), so a study made by an older version keeps working.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
DB_NAME = "study.db"
STUDY_FILE = "study.json"


def default_url(study_dir: str | Path) -> str:
    return f"sqlite:///{Path(study_dir).resolve() / DB_NAME}"


def study_url(folder: str | Path) -> str:
    """The database URL of a study folder (``study.json``'s ``db_url``, default SQLite inside it)."""
    path = Path(folder) / STUDY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{folder}: not a study folder (no {STUDY_FILE}); run 'dermino study create'")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not UTF-8 / not JSON: a corrupt or foreign file
        raise ValueError(f"{path}: not a study file (not JSON: {exc})") from exc
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: not a study file (expected a JSON object)")
    return meta.get("db_url") or default_url(folder)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for SQLite: WAL journal, full sync, foreign keys, a busy timeout."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record) -> None:  # noqa: ANN001
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` with the migrations shipped in this package."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def open_db(url: str) -> sessionmaker[Session]:
    """Engine + migrations + a session factory (``expire_on_commit=False``: rows stay readable)."""
    from sqlalchemy.exc import DatabaseError

    engine = make_engine(url)
    try:
        upgrade(engine)
    except DatabaseError as exc:  # e.g. "file is not a database": one error naming the database
        engine.dispose()
        raise ValueError(f"cannot open the study database {engine.url.render_as_string(hide_password=True)}: "
                         f"{exc.orig or exc}") from exc
    return sessionmaker(engine, expire_on_commit=False)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
