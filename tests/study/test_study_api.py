"""Reader-study API and storage: each step, and each forbidden access."""

from __future__ import annotations

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from _serve_fixtures import LABELS
from _study_fixtures import BACKENDS, database, make_study
from dermino.study.app import create_study_app
from dermino.study.db import current_revision, make_engine, study_url
from dermino.study.store import StudyStore


@pytest.fixture(scope="module", params=BACKENDS)
def study(request, tmp_path_factory):
    """The same study on SQLite and on a real PostgreSQL server: every test below runs on both."""
    with database(request.param) as url:
        made = make_study(tmp_path_factory.mktemp("study"), n_cases=4, db_url=url)
        store = StudyStore(made.folder)
        yield made, store, TestClient(create_study_app(store))


def H(made, who):  # noqa: N802
    return {"X-Study-Token": made.reader_tokens[who]}


def answer(client, made, who, case_id, rnd, diagnosis=None, **kw):
    labels = client.get("/study/api/me", headers=H(made, who)).json()["labels"]
    body = {"case_id": case_id, "round": rnd, "diagnosis": diagnosis or labels[0], "confidence": 3,
            "seconds": 4.5, **kw}
    return client.post("/study/api/answers", headers=H(made, who), json=body)


def test_setup_folder_database_and_links(study):
    made, store, _ = study
    assert store.n_cases == 4 and made.folder.joinpath("links.csv").stat().st_mode & 0o777 == 0o600
    links = pd.read_csv(made.folder / "links.csv")
    assert set(links["name"].dropna()) == {"alice", "bob"}
    url = study_url(made.folder)
    engine = make_engine(url)
    with engine.connect() as con:
        if url.startswith("sqlite"):
            assert url == f"sqlite:///{(made.folder / 'study.db').resolve()}"
            assert con.exec_driver_sql("pragma journal_mode").fetchone()[0] == "wal"
        else:  # the folder holds no database of its own
            assert url.startswith("postgresql") and not (made.folder / "study.db").exists()
        hashes = [r[0] for r in con.exec_driver_sql("select token_hash from reader")]
        cases = con.exec_driver_sql('select image, truth, ai from "case"').fetchall()
    assert made.reader_tokens["alice"] not in hashes and len(hashes[0]) == 64  # digests only
    assert current_revision(engine) == "0001"
    engine.dispose()
    assert all((made.folder / img).is_file() for img, _, _ in cases)
    # label space = the classifier's classes, fixed at creation (never the cases' diagnoses); AI help precomputed
    assert store.labels == LABELS and {t for _, t, _ in cases} <= set(store.labels)
    frame = store.answers_frame()
    assert frame.empty and "ai_top1" in frame


def test_orders_differ_between_rounds(study):
    made, store, _ = study
    from sqlalchemy import select

    from dermino.study.models import CaseOrder

    with store.sessions() as s:
        rows = s.execute(select(CaseOrder.reader_id, CaseOrder.round, CaseOrder.position, CaseOrder.case_id)).all()
    orders = {}
    for rid, rnd, _pos, cid in sorted(rows):
        orders.setdefault((rid, rnd), []).append(cid)
    assert all(sorted(o) == [1, 2, 3, 4] for o in orders.values())
    assert any(orders[(r, 1)] != orders[(r, 2)] for r in (1, 2))


def test_forbidden_without_or_with_wrong_tokens(study):
    made, _, c = study
    assert c.get("/study/api/me").status_code == 401
    assert c.get("/study/api/me", headers={"X-Study-Token": "nope"}).status_code == 401
    assert c.get("/study/api/cases/1/image").status_code == 401
    assert c.get("/study/api/admin/progress").status_code == 401
    assert c.get("/study/api/admin/progress", headers={"X-Admin-Token": "nope"}).status_code == 403
    # a reader token is not an admin token
    assert c.get("/study/api/admin/export.csv", headers={"X-Admin-Token": made.reader_tokens["alice"]}
                 ).status_code == 403
    assert c.get("/study/api/admin/progress", headers={"X-Admin-Token": made.admin_token}).status_code == 200


def test_case_ids_cannot_reach_files(study):
    made, _, c = study
    h = H(made, "alice")
    for path in ("/study/api/cases/..%2Fstudy.db/image", "/study/api/cases/../../study.db",
                 "/study/api/cases/1/..%2F..%2Fstudy.json", "/study/api/cases/1/links.csv",
                 "/study/api/cases/99/image", "/study/api/cases/-1/image", "/study/api/cases/1.5/image"):
        r = c.get(path, headers=h)
        assert r.status_code in (404, 422), path
        assert b"token" not in r.content and b"SQLite" not in r.content
    assert c.get("/study/study.db").status_code == 404 and c.get("/study/links.csv").status_code == 404


def test_rounds_rules_and_resume(study):
    made, store, c = study
    h = H(made, "alice")
    # round 1: no AI, the overlay is refused, round 2 answers are refused
    cur = c.get("/study/api/current", headers=h).json()["case"]
    assert cur["round"] == 1 and "ai" not in cur
    assert c.get(f"/study/api/cases/{cur['id']}/overlay", headers=h).status_code == 403
    assert answer(c, made, "alice", cur["id"], 2).status_code == 403
    # invalid answers
    assert answer(c, made, "alice", cur["id"], 1, diagnosis="psoriasis").status_code == 422
    assert answer(c, made, "alice", cur["id"], 1, confidence=6).status_code == 422
    assert answer(c, made, "alice", 99, 1).status_code == 404
    # answer two cases; the answer is stored at once with both timings
    first = answer(c, made, "alice", cur["id"], 1, comment="pigment network")
    assert first.status_code == 201 and first.json()["progress"]["done"]["1"] == 1
    assert answer(c, made, "alice", cur["id"], 1).status_code == 409  # final
    row = store.answers_frame().iloc[0]
    assert row["reader"] == "alice" and row["comment"] == "pigment network" and row["seconds"] == 4.5
    assert row["server_seconds"] >= 0
    nxt = c.get("/study/api/current", headers=h).json()["case"]
    assert nxt["id"] != cur["id"] and nxt["position"] == 2
    # another reader's progress and answers are theirs alone
    assert c.get("/study/api/answers", headers=H(made, "bob")).json() == []
    assert c.get("/study/api/me", headers=H(made, "bob")).json()["done"]["1"] == 0
    # a fresh client (the reader came back) resumes at the same case
    again = TestClient(create_study_app(StudyStore(made.folder)))
    assert again.get("/study/api/current", headers=h).json()["case"]["id"] == nxt["id"]
    # finish round 1 -> round 2 shows the AI; round 1 is closed
    while (case := c.get("/study/api/current", headers=h).json()["case"])["round"] == 1:
        assert answer(c, made, "alice", case["id"], 1).status_code == 201
    ai = case["ai"]
    assert len(ai["top"]) == 3 and abs(sum(d["probability"] for d in ai["top"])) <= 1.0 + 1e-6
    assert ai["similar"] and all(s["thumbnail"].startswith("data:image/jpeg") for s in ai["similar"])
    ov = c.get(ai["overlay"], headers=h)
    assert ov.status_code == 200 and ov.content[:4] == b"\x89PNG"
    assert answer(c, made, "alice", cur["id"], 1).status_code == 409
    # bob (still in round 1) cannot see round 2 or the overlay
    assert c.get(ai["overlay"], headers=H(made, "bob")).status_code == 403
    assert c.get("/study/api/current", headers=H(made, "bob")).json()["case"]["round"] == 1
    while (case := c.get("/study/api/current", headers=h).json()["case"]) is not None:
        assert answer(c, made, "alice", case["id"], 2).status_code == 201
    me = c.get("/study/api/me", headers=h).json()
    assert me["finished"] and me["done"] == {"1": 4, "2": 4}
    mine = c.get("/study/api/answers", headers=h).json()
    assert len(mine) == 8 and "truth" not in mine[0]


def test_admin_progress_export_and_analysis(study):
    made, store, c = study
    a = {"X-Admin-Token": made.admin_token}
    if not store.answers_frame().shape[0]:
        pytest.skip("runs after test_rounds_rules_and_resume")
    prog = c.get("/study/api/admin/progress", headers=a).json()
    alice = next(r for r in prog["readers"] if r["reader"] == "alice")
    assert alice["round"] == 3 and alice["round1"] == alice["round2"] == 4
    csv = c.get("/study/api/admin/export.csv", headers=a)
    assert csv.status_code == 200 and csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines()[0].startswith("reader,experience,case_id,round,diagnosis")
    assert len(csv.text.strip().splitlines()) == 1 + 8
    res = c.get("/study/api/admin/analysis", headers=a).json()
    assert res["per_reader"][0]["reader"] == "alice" and len(res["plots"]) == 2


def test_study_mounts_into_the_diagnosis_service(study):
    """`dermino serve --study`: one port serves the clinician UI, the API and the study with its rules."""
    from _serve_fixtures import tiny_classifier
    from dermino.serve.app import create_app
    from dermino.serve.service import Service
    from dermino.study.app import mount_study

    made, _, _ = study
    with TestClient(mount_study(create_app(Service(tiny_classifier())), StudyStore(made.folder))) as c:
        assert c.get("/").status_code == 200 and c.get("/static/components.js").status_code == 200
        assert "/study/reader.js" in c.get("/study/reader.html").text and c.get("/study/reader.js").status_code == 200
        assert c.get("/study/api/me", headers=H(made, "bob")).json()["name"] == "bob"
        assert c.get("/study/api/me").status_code == 401
        assert c.get("/health").status_code == 200


def test_postgres_password_can_stay_out_of_the_url(tmp_path, monkeypatch):
    """The documented recipe: a URL without the password, libpq reads PGPASSWORD."""
    with database("postgresql") as url:
        from sqlalchemy.engine import make_url

        full = make_url(url)
        if not full.password:
            pytest.skip("the test server's URL has no password to move")
        monkeypatch.setenv("PGPASSWORD", full.password)
        bare = full._replace(password=None).render_as_string(hide_password=False)
        made = make_study(tmp_path, n_cases=2, db_url=bare)
        import json

        assert make_url(json.loads((made.folder / "study.json").read_text())["db_url"]).password is None
        assert StudyStore(made.folder).n_cases == 2
