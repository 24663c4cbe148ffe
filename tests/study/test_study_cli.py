"""``dermino study create|export|analyse`` from the command line, and clear errors for bad inputs."""

from __future__ import annotations

import pandas as pd
import pytest

from _serve_fixtures import tiny_classifier
from _study_fixtures import readers_csv
from dermino.classifier.model import save_classifier
from dermino.cli import main
from dermino.data.sample import sample_manifests
from dermino.results import read_result
from dermino.study.store import StudyStore


def test_create_answer_export_analyse(tmp_path, capsys):
    clf = save_classifier(tiny_classifier(), tmp_path / "clf")
    ham = sample_manifests(tmp_path / "m")["ham10000"]
    readers = readers_csv(tmp_path / "readers.csv", [("r1", "junior"), ("r2", "senior"), ("r3", "senior")])
    args = ["study", "create", "--manifest", str(ham), "--cases", "5", "--readers", str(readers),
            "--classifier", str(clf), "--out", str(tmp_path / "s"), "--seed", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "/study/reader.html#token=" in out and "r3:" in out
    assert main(args) == 2  # never overwrites a study
    assert "already holds a study" in capsys.readouterr().err
    store = StudyStore(tmp_path / "s")
    assert store.n_cases == 5
    truth = pd.read_csv(ham).set_index("image")
    # answer everything through the store (the same rules as the API): r1 improves with the AI
    for reader in store.readers_progress():
        r = next(x for x in _readers(store) if x.name == reader["reader"])
        while (case := store.current_case(r)[1]) is not None:
            rnd = store.progress(r.id).round
            right = rnd == 2 or r.name != "r1"
            store.answer(r, case.id, rnd, case.truth if right else next(lab for lab in store.labels
                                                                        if lab != case.truth), 3, "", 1.0)
    assert main(["study", "export", str(tmp_path / "s"), "--out", str(tmp_path / "a.csv")]) == 0
    answers = pd.read_csv(tmp_path / "a.csv", keep_default_na=False)
    assert len(answers) == 3 * 5 * 2 and set(answers["truth"]) <= set(truth["labels"])
    assert main(["study", "analyse", str(tmp_path / "s"), "--out", str(tmp_path / "res"), "--bootstrap", "50"]) == 0
    res = read_result(next((tmp_path / "res").glob("*reader-study.json")))
    per = {r["reader"]: r for r in res.extra["per_reader"]}
    assert per["r1"]["acc_1"] == 0 and per["r1"]["acc_2"] == 1 and per["r2"]["change"] == 0
    assert res.metrics["accuracy_change"].value == pytest.approx(1 / 3)
    # the exported CSV analyses the same way
    assert main(["study", "analyse", str(tmp_path / "a.csv"), "--out", str(tmp_path / "res2"), "--bootstrap", "50"]) == 0
    res2 = read_result(next((tmp_path / "res2").glob("*reader-study.json")))
    assert res2.metrics["accuracy_change"].value == pytest.approx(1 / 3)
    assert main(["report", str(tmp_path / "res")]) == 0
    assert "Reader study" in (tmp_path / "res" / "report.html").read_text()


def _readers(store):
    from sqlalchemy import select

    from dermino.study.models import Reader

    with store.sessions() as s:
        return list(s.scalars(select(Reader)))


def test_bad_inputs_name_the_problem(tmp_path, capsys):
    bad = tmp_path / "readers.csv"
    bad.write_text("name,experience\nann,junior\nann,senior\n")
    assert main(["study", "create", "--manifest", "m.csv", "--cases", "2", "--readers", str(bad),
                 "--classifier", "c", "--out", str(tmp_path / "s")]) == 2
    assert "duplicate reader names ['ann']" in capsys.readouterr().err
    assert main(["study", "serve", str(tmp_path / "nowhere")]) == 2
    assert "not a study folder" in capsys.readouterr().err
