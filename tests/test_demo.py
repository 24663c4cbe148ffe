"""The demo runs end to end on the bundled sample (reduced budget) and its report is complete."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dermino.demo import DemoConfig, quick, run_demo
from dermino.report.html import format_metric
from dermino.results import Metric, read_results

SECTIONS = [
    "Data",
    "Disease vocabulary",
    "Pretraining",
    "Classification: kNN and linear probe",
    "Fairness by sex, age and estimated skin tone",
    "Lesion segmentation",
    "Similar cases",
    "Deployment: calibrated classifier, attention maps, zero-shot",
    "Federated fine-tuning: ham10000-dx_type",
    "How this report was made",
]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cfg = quick(DemoConfig(out=str(out)))
    html_path = run_demo(cfg)
    return out, html_path


def test_demo_writes_every_result(demo_run):
    out, _ = demo_run
    results = read_results(out / "eval" / "results")
    cells = {(r.backbone, r.dataset, r.task) for r in results}
    for backbone in ("random-init", "hybrid", "ssl-only"):
        for dataset in ("ham10000", "isic2017-melanoma"):
            assert (backbone, dataset, "knn") in cells
            assert (backbone, dataset, "linear") in cells
    assert {("random-init", "ph2", "segmentation-linear"), ("hybrid", "ph2", "segmentation-linear")} <= cells
    for r in results:
        if r.task in ("knn", "linear"):
            m = r.metrics["auroc"]
            assert 0.0 <= m.value <= 1.0 and m.ci_low is not None and m.ci_low <= m.value <= m.ci_high
    # both pretraining runs exported a teacher and logged their losses
    for run in ("hybrid", "ssl-only"):
        assert (out / "pretrain" / run / "export" / "teacher_backbone.pt").is_file()
        assert (out / "pretrain" / run / "metrics.csv").is_file()
    # the hybrid run records its knowledge classes and the class-prior level the report draws
    summary = json.loads((out / "pretrain" / "hybrid" / "knowledge.json").read_text())
    assert "melanoma" in summary["classes"] and 0 < summary["labelled_rows"] <= summary["rows"]
    assert 0 < summary["class_prior_floor"] < math.log(2)
    assert not (out / "pretrain" / "ssl-only" / "knowledge.json").exists()


def test_demo_deploys_what_dermino_serve_loads(demo_run):
    """The deploy step's folders are the ones `dermino serve` starts from, and the report shows their numbers."""
    from dermino.classifier.model import load_classifier
    from dermino.serve.index import CaseIndex
    from dermino.serve.index_build import check_compatible

    out, html_path = demo_run
    clf = load_classifier(out / "deploy" / "classifier")
    check_compatible(CaseIndex.load(out / "deploy" / "index"), clf, "--index")
    info = json.loads((out / "deploy" / "classifier" / "classifier.json").read_text())
    zs = json.loads((out / "deploy" / "zeroshot.json").read_text())
    assert zs["dataset"] == "ph2" and set(zs["classes"]) == {"atypical nevus", "common nevus", "melanoma"}
    html = html_path.read_text()
    assert format_metric(Metric(**info["metrics"]["auroc"])) in html
    assert format_metric(Metric(**zs["trained"]["auroc"])) in html
    assert (out / "figures" / "attention.png").is_file()


def test_demo_federates_across_sites_and_reports_the_comparison(demo_run):
    out, html_path = demo_run
    results = [r for r in read_results(out / "federated" / "compare") if r.task == "federated"]
    methods = {r.backbone for r in results}
    assert {"federated-fedavg", "pooled", "local-histo"} <= methods
    assert (out / "federated" / "global" / "latest.pt").is_file()
    union = next(r for r in results if r.backbone == "pooled" and r.extra["test_set"] == "union")
    assert format_metric(union.metrics["auroc_macro"]) in html_path.read_text()


def test_report_has_every_section_with_numbers_from_the_results(demo_run):
    out, html_path = demo_run
    html = html_path.read_text()
    for title in SECTIONS:
        assert title in html, title
    # numbers in the report are the ones in the results files
    for r in read_results(out / "eval" / "results"):
        if r.task == "segmentation-linear":
            assert format_metric(r.metrics["dice"]) in html
    knn = [r for r in read_results(out / "eval" / "results") if r.task == "knn" and r.backbone == "hybrid"]
    assert any(f"{r.metrics['auroc'].value:.3f}" in html for r in knn)
    # self-contained: every image is embedded, nothing is linked from disk
    images = re.findall(r"<img [^>]*src=\"([^\"]{0,30})", html)
    assert len(images) >= 4 and all(src.startswith("data:image/") for src in images)
    assert (out / "report.md").read_text().startswith("# dermino demo")


@pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="no chromium")
def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    _, html_path = demo_run
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    png = tmp_path / "report.png"
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={png}",
         "--window-size=1200,2400", html_path.as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    assert png.is_file() and png.stat().st_size > 20_000  # a blank page is a few kB


def test_compare_two_backbones_of_the_run(demo_run, tmp_path, capsys):
    """`dermino compare` pairs hybrid with ssl-only on the saved predictions: the point
    difference is the difference of the two results' metrics, with a CI around it."""
    from dermino.cli import main

    out, _ = demo_run
    path = tmp_path / "cmp.json"
    assert main(["compare", str(out / "eval"), "hybrid", "ssl-only", "--bootstrap", "200", "--json", str(path)]) == 0
    rows = json.loads(path.read_text())
    value = {(r.backbone, r.dataset, r.task): r.metrics["auroc"].value
             for r in read_results(out / "eval" / "results") if r.task in ("knn", "linear")}
    assert {(c["dataset"], c["task"]) for c in rows} == {
        (d, t) for d in ("ham10000", "isic2017-melanoma") for t in ("knn", "linear")
    }
    for c in rows:
        expected = value[("hybrid", c["dataset"], c["task"])] - value[("ssl-only", c["dataset"], c["task"])]
        assert c["diff"] == pytest.approx(expected, abs=1e-9)
        assert c["diff_ci"][0] <= c["diff"] <= c["diff_ci"][1] and 0 < c["p_value"] <= 1
    assert "hybrid - ssl-only" in capsys.readouterr().out
    assert main(["compare", str(out / "eval"), "hybrid", "no-such-backbone"]) == 2
    assert "'no-such-backbone' not in" in capsys.readouterr().err


def test_report_is_rebuilt_from_the_demo_folder_alone(demo_run):
    """The report reads files (steps.json, demo_config.yaml, results), not the Demo object."""
    from dermino.report.demo_report import build_demo_report

    out, html_path = demo_run
    before = html_path.read_text()
    html_path.unlink()
    rebuilt, md = build_demo_report(str(out))
    assert rebuilt == html_path and md.is_file()
    text = rebuilt.read_text()
    for title in SECTIONS:
        assert title in text, title
    # same sections and numbers; figures are re-rendered, and the provenance table now also lists
    # the first report step, so compare from the first section up to that table
    body = lambda s: re.sub(r"<img [^>]*>", "", s).split("<h2>", 1)[1].split("How this report was made")[0]  # noqa: E731
    assert body(text) == body(before)


def test_full_demo_needs_a_data_location(tmp_path, monkeypatch, capsys):
    from dermino.cli import main

    monkeypatch.delenv("DERMINO_DATA", raising=False)
    assert main(["demo", "--full", "--out", str(tmp_path / "d")]) == 2
    assert "DERMINO_DATA" in capsys.readouterr().err and not (tmp_path / "d").exists()


def test_report_rebuilds_from_a_moved_folder_with_relative_paths(demo_run, tmp_path, monkeypatch):
    """`dermino demo --out demo_output` records paths relative to where it ran; the report still finds
    the pretraining runs when rebuilt from another directory, or after the folder was moved."""
    import shutil

    import yaml

    from dermino.report.demo_report import build_demo_report

    out, _ = demo_run
    moved = tmp_path / "elsewhere" / "copy"
    shutil.copytree(out, moved)
    cfg = yaml.safe_load((moved / "demo_config.yaml").read_text())
    cfg["out"] = "demo_output"
    (moved / "demo_config.yaml").write_text(yaml.safe_dump(cfg))
    steps = json.loads((moved / "steps.json").read_text())
    for s in steps:
        if s["name"].startswith("pretrain:"):
            s["detail"]["out"] = "demo_output/" + str(Path(s["detail"]["out"]).relative_to(out))
    (moved / "steps.json").write_text(json.dumps(steps))
    monkeypatch.chdir(tmp_path)
    _, md = build_demo_report(moved)
    runs_table = md.read_text().split("## Pretraining", 1)[1].split("## ", 1)[0]
    assert "| hybrid |" in runs_table and "| ssl-only |" in runs_table
