"""The reader study under hostile or careless input: body size, NaN timings, formula cells, label space."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from _serve_fixtures import LABELS, tiny_classifier
from _study_fixtures import make_study, readers_csv
from dermino.cli import main
from dermino.data.sample import sample_manifests
from dermino.serve.body import MAX_BODY
from dermino.study.app import create_study_app
from dermino.study.setup import create_study
from dermino.study.store import StudyStore


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    made = make_study(tmp_path_factory.mktemp("study_hostile"), n_cases=5)
    store = StudyStore(made.folder)
    with TestClient(create_study_app(store)) as c:
        yield made, store, c


def H(made, who: str) -> dict[str, str]:
    return {"X-Study-Token": made.reader_tokens[who]}


def _post_answer(c, made, who, case_id, rnd=1, **kw):
    body = {"case_id": case_id, "round": rnd, "diagnosis": LABELS[0], "confidence": 3, "seconds": 4.5, **kw}
    return c.post("/study/api/answers", headers=H(made, who), json=body)


def test_request_bodies_over_the_serve_limit_are_refused_before_reading(study):
    _, _, c = study
    big = b"x" * (MAX_BODY + 1)
    r = c.post("/study/api/answers", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]

    def chunks():  # no content-length: counted while it streams
        for _ in range(MAX_BODY // 65536 + 2):
            yield b"x" * 65536

    r = c.post("/study/api/answers", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize("seconds", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_seconds_are_a_422(study, seconds):
    made, store, c = study
    case = c.get("/study/api/current", headers=H(made, "bob")).json()["case"]
    raw = (f'{{"case_id": {case["id"]}, "round": 1, "diagnosis": "{LABELS[0]}", "confidence": 3, '
           f'"seconds": {seconds}}}')
    r = c.post("/study/api/answers", content=raw, headers={**H(made, "bob"), "content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "seconds" in r.text
    assert not (store.answers_frame()["reader"] == "bob").any()  # nothing stored


def test_label_space_is_the_classifiers_and_the_same_for_every_reader(study):
    made, store, c = study
    assert store.labels == LABELS  # not the sampled cases' diagnoses
    seen = [c.get("/study/api/me", headers=H(made, who)).json()["labels"] for who in ("alice", "bob")]
    assert seen[0] == seen[1] == LABELS
    with store.sessions() as s:
        from sqlalchemy import select

        from dermino.study.models import Case

        cases = list(s.scalars(select(Case)))
    for case in cases:
        assert case.truth in LABELS
        named = [d["label"] for d in case.ai["top"]] + [d["label"] for d in case.ai["similar"]]
        assert named and set(named) <= set(LABELS), named


def test_a_given_label_space_restricts_cases_and_the_ai(tmp_path):
    chosen = ["melanoma", "melanocytic nevus", "benign keratosis"]
    ham = sample_manifests(tmp_path / "m")["ham10000"]
    made = create_study(ham, 4, readers_csv(tmp_path / "readers.csv", [("ann", "")]), tiny_classifier(), None,
                        tmp_path / "study", labels=chosen)
    store = StudyStore(made.folder)
    assert store.labels == chosen
    with store.sessions() as s:
        from sqlalchemy import select

        from dermino.study.models import Case

        for case in s.scalars(select(Case)):
            assert case.truth in chosen
            assert [d["label"] for d in case.ai["top"]] and {d["label"] for d in case.ai["top"]} <= set(chosen)
    with pytest.raises(ValueError, match="AI could name none"):
        create_study(ham, 2, readers_csv(tmp_path / "r2.csv", [("ann", "")]), tiny_classifier(), None,
                     tmp_path / "study2", labels=["psoriasis"])


FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+SUM(1,2)", "-2+3", "@SUM(A1)", "\t=1+1", "\r=1+1"]


def test_csv_export_neutralises_formula_cells(study, tmp_path):
    made, store, c = study
    for comment in FORMULAS[:5]:
        case = c.get("/study/api/current", headers=H(made, "alice")).json()["case"]
        assert _post_answer(c, made, "alice", case["id"], comment=comment).status_code == 201
    case = c.get("/study/api/current", headers=H(made, "alice")).json()["case"]  # round 2 now
    assert _post_answer(c, made, "alice", case["id"], rnd=2, comment=FORMULAS[5]).status_code == 201
    r = c.get("/study/api/admin/export.csv", headers={"X-Admin-Token": made.admin_token})
    out = tmp_path / "answers.csv"
    assert main(["study", "export", str(made.folder), "--out", str(out)]) == 0
    for text in (r.text, out.read_bytes().decode()):
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
        comments = [row["comment"] for row in rows if row["reader"] == "alice"]
        assert sorted(comments) == sorted("'" + f for f in FORMULAS)
        for row in rows:
            for value in row.values():
                assert not value.startswith(("=", "+", "@", "\t", "\r")), row
    assert set(store.answers_frame()["comment"]) >= set(FORMULAS)  # the database keeps the text as typed


def test_admin_analysis_says_whom_it_includes_and_waits_for(tmp_path):
    made = make_study(tmp_path, n_cases=3, index=False)
    store = StudyStore(made.folder)
    c = TestClient(create_study_app(store))
    admin = {"X-Admin-Token": made.admin_token}
    r = c.get("/study/api/admin/analysis", headers=admin)
    assert r.status_code == 409
    assert "waiting for: alice (round 1: 0/3, round 2: 0/3), bob (round 1: 0/3, round 2: 0/3)" in r.json()["detail"]
    while (case := c.get("/study/api/current", headers=H(made, "alice")).json()["case"]) is not None:
        assert _post_answer(c, made, "alice", case["id"], rnd=case["round"]).status_code == 201
    body = c.get("/study/api/admin/analysis", headers=admin).json()
    assert body["included"] == ["alice"] and body["waiting_for"] == ["bob (round 1: 0/3, round 2: 0/3)"]
    assert "it waits for" in (Path(__file__).parents[2] / "src/dermino/study/static/admin.js").read_text()


def test_reader_page_hides_hidden_sections_despite_the_shared_grid_style():
    """``.results { display: grid }`` (serve's style.css) beat the ``hidden`` attribute: the last case
    and an active Submit button stayed on screen after the study was finished."""
    root = Path(__file__).parents[2] / "src/dermino"
    assert ".results { display: grid" in (root / "serve/static/style.css").read_text()
    css = (root / "study/static/study.css").read_text()
    assert "[hidden] { display: none !important; }" in css
    assert 'href="/study/study.css"' in (root / "study/static/reader.html").read_text()
