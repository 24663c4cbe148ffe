"""The study's HTTP API: a reader router and an admin router (``/study/api/...``).

Readers authenticate with their private token in the ``X-Study-Token`` header (the pages
read it from the link's ``#token=`` fragment, which browsers never send to servers or put
in logs); the admin with ``X-Admin-Token``. Case ids are database ids: files are looked up
from the case row inside the study folder, never from anything the client sends.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from dermino.study.models import Reader
from dermino.study.store import StudyError, StudyStore, export_csv

reader_router = APIRouter(prefix="/study/api", tags=["study: reader"])
admin_router = APIRouter(prefix="/study/api/admin", tags=["study: admin"])


def store(request: Request) -> StudyStore:
    return request.app.state.study


def _raise(exc: StudyError) -> HTTPException:
    return HTTPException(exc.status, exc.detail)


def current_reader(request: Request, x_study_token: Annotated[str | None, Header()] = None) -> Reader:
    try:
        return store(request).reader_for(x_study_token)
    except StudyError as exc:
        raise _raise(exc) from exc


def require_admin(request: Request, x_admin_token: Annotated[str | None, Header()] = None) -> None:
    try:
        store(request).check_admin(x_admin_token)
    except StudyError as exc:
        raise _raise(exc) from exc


ReaderDep = Annotated[Reader, Depends(current_reader)]


class AnswerIn(BaseModel):
    case_id: int
    round: Literal[1, 2]
    diagnosis: str = Field(min_length=1, max_length=200)
    confidence: int = Field(ge=1, le=5)
    comment: str = Field(default="", max_length=4000)
    seconds: float = Field(ge=0, le=86400, allow_inf_nan=False, description="time on the case, measured by the browser")


def _progress(st: StudyStore, reader: Reader) -> dict[str, Any]:
    p = st.progress(reader.id)
    return {"round": p.round, "done": {str(k): v for k, v in p.done.items()}, "total": p.total,
            "finished": p.round == 3}


@reader_router.get("/me")
def me(request: Request, reader: ReaderDep) -> dict[str, Any]:
    st = store(request)
    return {"name": reader.name, "study": st.name, "labels": st.labels, **_progress(st, reader)}


@reader_router.get("/current")
def current(request: Request, reader: ReaderDep) -> dict[str, Any]:
    """The next case of the reader's round (round 2 adds the AI's help); ``case: null`` when done."""
    st = store(request)
    prog, case, position = st.current_case(reader)
    out: dict[str, Any] = {"progress": _progress(st, reader), "case": None}
    if case is not None:
        out["case"] = {"id": case.id, "round": prog.round, "position": position + 1,
                       "image": f"/study/api/cases/{case.id}/image"}
        if prog.round == 2:
            out["case"]["ai"] = {**case.ai, "overlay": f"/study/api/cases/{case.id}/overlay"}
    return out


@reader_router.get("/cases/{case_id}/{kind}", responses={403: {}, 404: {}})
def case_file(request: Request, reader: ReaderDep, case_id: int, kind: Literal["image", "overlay"]) -> FileResponse:
    try:
        path = store(request).case_file(reader, case_id, kind)
    except StudyError as exc:
        raise _raise(exc) from exc
    return FileResponse(path, headers={"Cache-Control": "private, no-store"})


@reader_router.post("/answers", status_code=201, responses={403: {}, 404: {}, 409: {}, 422: {}})
def post_answer(request: Request, reader: ReaderDep, body: AnswerIn) -> dict[str, Any]:
    """Stored (and committed) before this returns: an acknowledged answer survives a crash."""
    st = store(request)
    try:
        ans = st.answer(reader, body.case_id, body.round, body.diagnosis, body.confidence, body.comment, body.seconds)
    except StudyError as exc:
        raise _raise(exc) from exc
    return {"id": ans.id, "progress": _progress(st, reader)}


@reader_router.get("/answers")
def my_answers(request: Request, reader: ReaderDep) -> list[dict[str, Any]]:
    """This reader's own answers (never anyone else's, never the truth)."""
    return [{"case_id": a.case_id, "round": a.round, "diagnosis": a.diagnosis, "confidence": a.confidence,
             "comment": a.comment, "seconds": a.seconds} for a in store(request).reader_answers(reader.id)]


@admin_router.get("/progress", dependencies=[Depends(require_admin)])
def admin_progress(request: Request) -> dict[str, Any]:
    st = store(request)
    return {"study": st.name, "cases": st.n_cases, "labels": st.labels, "readers": st.readers_progress()}


@admin_router.get("/export.csv", dependencies=[Depends(require_admin)])
def admin_export(request: Request) -> Response:
    return Response(export_csv(store(request).answers_frame()), media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="answers.csv"'})


@admin_router.get("/analysis", dependencies=[Depends(require_admin)])
def admin_analysis(request: Request) -> dict[str, Any]:
    """The analysis of the answers so far (readers who answered cases in both rounds)."""
    import base64
    import math
    import tempfile

    from dermino.study.analysis import analyse, make_plots

    st = store(request)
    status = st.analysis_status()
    try:
        res = analyse(st.answers_frame(), st.labels, n_boot=500)
    except ValueError as exc:
        waiting = f"; waiting for: {', '.join(status['waiting_for'])}" if status["waiting_for"] else ""
        raise HTTPException(409, f"{exc}{waiting}") from exc
    with tempfile.TemporaryDirectory() as tmp:
        plots = [f"data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}" for p in make_plots(res, tmp)]
    clean = lambda v: None if isinstance(v, float) and not math.isfinite(v) else v  # noqa: E731
    return {
        "metrics": {k: {"value": clean(m.value), "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n}
                    for k, m in res.metrics.items()},
        "per_reader": [{k: clean(v) for k, v in r.items()} for r in res.per_reader.to_dict("records")],
        "groups": [{k: clean(v) for k, v in r.items()} for r in res.groups.to_dict("records")],
        "tests": {k: {t: {a: clean(b) for a, b in d.items()} for t, d in v.items()} for k, v in res.tests.items()},
        "plots": plots,
        **status,  # the page says whose answers are in, and what the final analysis still waits for
    }
