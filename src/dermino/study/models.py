"""The study's tables (SQLAlchemy 2 ORM): study, readers, cases, per-reader case order, answers.

Why rows per reader and round for the order: the order is drawn once at set-up and stored, so a
reader who comes back (or a server restarted after a crash) continues the same sequence.
Tokens are stored only as SHA-256 digests: a copy of the database does not let anyone log in.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Study(Base):
    __tablename__ = "study"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    labels: Mapped[list[str]] = mapped_column(JSON)  # the study's label space: the cases' diagnoses
    admin_token_hash: Mapped[str] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(Integer)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Reader(Base):
    __tablename__ = "reader"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    experience: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)


class Case(Base):
    __tablename__ = "case"
    id: Mapped[int] = mapped_column(primary_key=True)
    image: Mapped[str] = mapped_column(String(300))  # the study's own copy, relative to the study folder
    overlay: Mapped[str] = mapped_column(String(300), default="")  # attention overlay PNG, same folder rules
    source_image: Mapped[str] = mapped_column(Text, default="")  # manifest path, for provenance only
    truth: Mapped[str] = mapped_column(String(200))
    ai: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # top3 + similar cases, computed at set-up


class CaseOrder(Base):
    __tablename__ = "case_order"
    __table_args__ = (UniqueConstraint("reader_id", "round", "position"),
                      UniqueConstraint("reader_id", "round", "case_id"))
    id: Mapped[int] = mapped_column(primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("reader.id"), index=True)
    round: Mapped[int] = mapped_column(Integer)
    position: Mapped[int] = mapped_column(Integer)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"))
    first_shown: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Answer(Base):
    __tablename__ = "answer"
    __table_args__ = (UniqueConstraint("reader_id", "case_id", "round"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    reader_id: Mapped[int] = mapped_column(ForeignKey("reader.id"), index=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("case.id"))
    round: Mapped[int] = mapped_column(Integer)
    diagnosis: Mapped[str] = mapped_column(String(200))
    confidence: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str] = mapped_column(Text, default="")
    seconds: Mapped[float] = mapped_column(Float)  # time on the case as the browser measured it
    server_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # first shown -> answered
    created: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
