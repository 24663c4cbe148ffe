"""The study as the web app sees it: the folder, the database and the rules of the two rounds.

Kept apart from the HTTP layer so the rules (round 2 only after round 1, answers final,
label space) are tested without a server and shared by the routes, the CLI and the analysis.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from dermino.study.db import open_db, study_url, token_hash
from dermino.study.models import Answer, Case, CaseOrder, Reader, Study, utcnow

#: what a spreadsheet reads as the start of a formula (tab and CR too: some apps strip them first)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Text cells that a spreadsheet would run as a formula, prefixed with ``'`` (OWASP's advice).

    A reader's comment such as ``=HYPERLINK(...)`` must stay text when the organiser opens the
    export; numbers (including negative ones) are not text and are left alone.
    """
    out = df.copy()
    for col in out.columns:
        values = out[col].tolist()
        if any(isinstance(v, str) and v.startswith(FORMULA_START) for v in values):
            out[col] = pd.Series([f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_START) else v
                                  for v in values], index=out.index, dtype=object)
    return out


def export_csv(df: pd.DataFrame) -> str:
    """The answers as CSV text for spreadsheets: formula cells neutralised (``csv_safe``) and CRLF
    line ends, so a cell holding a lone carriage return is quoted rather than splitting its row."""
    return csv_safe(df).to_csv(index=False, lineterminator="\r\n")


class StudyError(Exception):
    """A request the study rules refuse; ``status`` is the HTTP code the API answers with."""

    def __init__(self, status: int, detail: str):
        super().__init__(detail)
        self.status, self.detail = status, detail


@dataclass
class Progress:
    round: int  # the round the reader is in (3 = finished both)
    done: dict[int, int]
    total: int


class StudyStore:
    def __init__(self, folder: str | Path, url: str | None = None):
        self.folder = Path(folder).resolve()
        self.sessions: sessionmaker[Session] = open_db(url or study_url(self.folder))
        with self.sessions() as s:
            study = s.scalars(select(Study)).first()
            if study is None:
                raise ValueError(f"{self.folder}: the database holds no study (run 'dermino study create')")
            self.name, self.labels, self._admin_hash = study.name, list(study.labels), study.admin_token_hash
            self.n_cases = s.scalar(select(func.count()).select_from(Case)) or 0

    # ------------------------------------------------------------------ access
    def reader_for(self, token: str | None) -> Reader:
        """The reader whose token this is; every stored digest is compared, in constant time."""
        if not token:
            raise StudyError(401, "missing reader token (open the private link you were given)")
        digest = token_hash(token)
        with self.sessions() as s:
            found = None
            for reader in s.scalars(select(Reader)):
                if hmac.compare_digest(digest, reader.token_hash):
                    found = reader
        if found is None:
            raise StudyError(401, "unknown reader token")
        return found

    def check_admin(self, token: str | None) -> None:
        if not token or not hmac.compare_digest(token_hash(token), self._admin_hash):
            raise StudyError(401 if not token else 403, "admin token required" if not token else "wrong admin token")

    # ------------------------------------------------------------------ progress
    def progress(self, reader_id: int) -> Progress:
        with self.sessions() as s:
            rows = s.execute(select(Answer.round, func.count()).where(Answer.reader_id == reader_id)
                             .group_by(Answer.round)).all()
        done = {1: 0, 2: 0} | {int(r): int(n) for r, n in rows}
        rnd = 1 if done[1] < self.n_cases else 2 if done[2] < self.n_cases else 3
        return Progress(rnd, done, self.n_cases)

    def _order(self, s: Session, reader_id: int, case_id: int, rnd: int) -> CaseOrder:
        row = s.scalars(select(CaseOrder).where(CaseOrder.reader_id == reader_id, CaseOrder.round == rnd,
                                                CaseOrder.case_id == case_id)).first()
        if row is None:
            raise StudyError(404, f"case {case_id} is not one of this reader's cases")
        return row

    def current_case(self, reader: Reader) -> tuple[Progress, Case | None, int]:
        """The first unanswered case of the reader's current round (marks when it was first shown)."""
        prog = self.progress(reader.id)
        if prog.round == 3:
            return prog, None, prog.total
        with self.sessions.begin() as s:
            answered = select(Answer.case_id).where(Answer.reader_id == reader.id, Answer.round == prog.round)
            row = s.scalars(select(CaseOrder).where(CaseOrder.reader_id == reader.id, CaseOrder.round == prog.round,
                                                    CaseOrder.case_id.not_in(answered))
                            .order_by(CaseOrder.position)).first()
            if row is None:
                raise StudyError(500, f"reader {reader.name!r} has no case order for round {prog.round}")
            if row.first_shown is None:
                row.first_shown = utcnow()
            case = s.get(Case, row.case_id)
            return prog, case, row.position

    def case_file(self, reader: Reader, case_id: int, kind: str) -> Path:
        """The study's stored copy (or overlay) of a case this reader may see; never a client path."""
        with self.sessions() as s:
            self._order(s, reader.id, case_id, 1)
            case = s.get(Case, case_id)
        if kind == "overlay" and self.progress(reader.id).round == 1:
            raise StudyError(403, "the AI's help is shown in round 2, after all round-1 answers")
        rel = case.image if kind == "image" else case.overlay
        path = (self.folder / rel).resolve()
        if not path.is_relative_to(self.folder) or not path.is_file():
            raise StudyError(404, f"file of case {case_id} is missing from the study folder")
        return path

    # ------------------------------------------------------------------ answers
    def answer(self, reader: Reader, case_id: int, rnd: int, diagnosis: str, confidence: int, comment: str,
               seconds: float) -> Answer:
        if diagnosis not in self.labels:
            raise StudyError(422, f"diagnosis {diagnosis!r} is not in the study's label space {self.labels}")
        prog = self.progress(reader.id)
        if rnd == 2 and prog.round == 1:
            raise StudyError(403, f"round 2 opens after all round-1 answers ({prog.done[1]}/{prog.total} given)")
        if rnd == 1 and prog.round > 1:
            raise StudyError(409, "round 1 is closed: its answers cannot be changed")
        try:
            with self.sessions.begin() as s:
                order = self._order(s, reader.id, case_id, rnd)
                if s.scalars(select(Answer).where(Answer.reader_id == reader.id, Answer.case_id == case_id,
                                                  Answer.round == rnd)).first():
                    raise StudyError(409, f"case {case_id} already answered in round {rnd}; answers are final")
                now = utcnow()
                shown = order.first_shown
                ans = Answer(reader_id=reader.id, case_id=case_id, round=rnd, diagnosis=diagnosis,
                             confidence=confidence, comment=comment, seconds=seconds, created=now,
                             server_seconds=(now - shown).total_seconds() if shown else None)
                s.add(ans)
        except IntegrityError as exc:  # the same answer raced in from another tab
            raise StudyError(409, f"case {case_id} already answered in round {rnd}") from exc
        return ans

    def reader_answers(self, reader_id: int) -> list[Answer]:
        with self.sessions() as s:
            return list(s.scalars(select(Answer).where(Answer.reader_id == reader_id)
                                  .order_by(Answer.round, Answer.created)))

    # ------------------------------------------------------------------ export
    def answers_frame(self) -> pd.DataFrame:
        """Every answer with the reader, the truth and the AI's top-1 (what the export and analysis read)."""
        with self.sessions() as s:
            rows = s.execute(select(Answer, Reader, Case).join(Reader, Answer.reader_id == Reader.id)
                             .join(Case, Answer.case_id == Case.id).order_by(Answer.id)).all()
        cols = ["reader", "experience", "case_id", "round", "diagnosis", "confidence", "comment", "seconds",
                "server_seconds", "truth", "ai_top1", "answered_at"]
        return pd.DataFrame([{
            "reader": r.name, "experience": r.experience, "case_id": c.id, "round": a.round,
            "diagnosis": a.diagnosis, "confidence": a.confidence, "comment": a.comment, "seconds": a.seconds,
            "server_seconds": a.server_seconds, "truth": c.truth,
            "ai_top1": (c.ai.get("top") or [{}])[0].get("label", ""), "answered_at": a.created.isoformat()}
            for a, r, c in rows], columns=cols)

    def analysis_status(self) -> dict[str, list[str]]:
        """Who the analysis includes (readers with answers in both rounds) and who it waits for."""
        included, waiting = [], []
        for r in self.readers_progress():
            if r["round1"] and r["round2"]:
                included.append(r["reader"])
            if r["round2"] < r["total"]:
                waiting.append(f"{r['reader']} (round 1: {r['round1']}/{r['total']}, round 2: {r['round2']}/{r['total']})")
        return {"included": included, "waiting_for": waiting}

    def readers_progress(self) -> list[dict]:
        with self.sessions() as s:
            readers = list(s.scalars(select(Reader).order_by(Reader.id)))
        out = []
        for r in readers:
            p = self.progress(r.id)
            out.append({"reader": r.name, "experience": r.experience, "round": p.round,
                        "round1": p.done[1], "round2": p.done[2], "total": p.total})
        return out
