"""Leaderboard: resumes after SIGKILL without recomputing a finished cell, records failures, flags contamination,
writes the tidy table and an HTML report with embedded plots; seed comparisons need every seed to agree."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from _fake_vl import NAME, register_fake, unregister_fake
from dermino.evaluate.config import BackboneSpec, DatasetSpec, EvalConfig
from dermino.evaluate.leaderboard import COLUMNS, cell_dir, seed_comparisons

TESTS = Path(__file__).resolve().parents[1]  # tests/: where _fake_vl.py lives
SRC = TESTS.parent / "src"


@pytest.fixture
def fake_vl():
    register_fake()
    yield NAME
    unregister_fake()


def _config(tmp_path: Path, backbones: list[dict], **extra) -> Path:
    from dermino.data.sample import sample_manifests

    ham = sample_manifests(tmp_path / "manifests")["ham10000"]
    data = {
        "out_dir": str(tmp_path / "lb"), "progress": False, "bootstrap": 30,
        "backbones": backbones,
        "datasets": [{"name": "ham10000-sample", "manifest": str(ham)}],
        "embed": {"image_size": 28, "batch_size": 64, "cache_dir": str(tmp_path / "cache")},
        "linear": {"Cs": [0.1, 1.0]},
        "fairness": {"attributes": ["sex", "age"], "min_group_size": 5},
        "calibration": {"min_group_size": 5},
        **extra,
    }
    path = tmp_path / "lb.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


_RUNNER = """
import sys
sys.path[:0] = [{tests!r}, {src!r}]
from _fake_vl import register_fake
register_fake()
from dermino.cli import main
sys.exit(main(["leaderboard", "--preset", "dermino-paper", "--config", {cfg!r}, "--backbones", "a,b"]))
"""


def _calls(path: Path) -> dict[str, int]:
    lines = path.read_text().split() if path.exists() else []
    return {s: lines.count(s) for s in set(lines)}


@pytest.mark.slow
def test_resumes_after_sigkill_without_recomputing_finished_cells(tmp_path):
    cfg = _config(tmp_path, [{"name": "a", "model": NAME, "overrides": {"seed": 0}},
                             {"name": "b", "model": NAME, "overrides": {"seed": 1}}])
    calls = tmp_path / "calls.txt"
    script = _RUNNER.format(tests=str(TESTS), src=str(SRC), cfg=str(cfg))
    env = {**os.environ, "DERMINO_TEST_EMBED_CALLS": str(calls), "DERMINO_TEST_HANG_SEED": "1",
           "PYTHONPATH": str(SRC), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    out = tmp_path / "lb"
    a_status = cell_dir(out, "a", "ham10000-sample") / "status.json"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and not (a_status.exists() and _calls(calls).get("1")):
            assert proc.poll() is None, "the leaderboard exited before it could be killed"
            time.sleep(0.2)
        assert a_status.exists() and _calls(calls).get("1"), "cell a never finished / b never started"
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 while b is mid-embedding
        proc.wait()
    assert json.loads(a_status.read_text())["status"] == "done"
    assert not (cell_dir(out, "b", "ham10000-sample") / "status.json").exists()
    before = _calls(calls)
    stamp = a_status.stat().st_mtime_ns
    import shutil

    shutil.rmtree(tmp_path / "cache")  # so a recomputed cell would have to embed again
    env.pop("DERMINO_TEST_HANG_SEED")
    rc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert rc.returncode == 0, rc.stderr[-2000:]
    after = _calls(calls)
    assert after.get("0", 0) == before.get("0", 0), "the finished cell was recomputed"
    assert after.get("1", 0) > before.get("1", 0)
    assert a_status.stat().st_mtime_ns == stamp
    table = pd.read_csv(out / "leaderboard.csv")
    assert set(table.backbone) == {"a", "b"}


@pytest.mark.slow
def test_failures_tidy_table_ranks_paired_tests_and_report(fake_vl, tmp_path):
    from dermino.cli import main

    cfg = _config(tmp_path, [{"name": "a", "model": NAME}, {"name": "a2", "model": NAME, "overrides": {"seed": 3}},
                             {"name": "broken", "model": NAME, "overrides": {"fail": True, "seed": 9}}])
    assert main(["leaderboard", "--preset", "dermino-paper", "--config", str(cfg), "--reference", "a"]) == 0
    out = tmp_path / "lb"
    data = json.loads((out / "leaderboard.json").read_text())
    assert [f["backbone"] for f in data["failures"]] == ["broken"]
    assert "broken on purpose" in data["failures"][0]["error"]
    table = pd.read_csv(out / "leaderboard.csv")
    assert list(table.columns) == COLUMNS
    assert {"knn", "linear", "fairness-linear", "calibration-linear"} <= set(table.protocol)
    lin = table[(table.backbone == "a") & (table.protocol == "linear") & (table.metric == "auroc")]
    assert len(lin) == 1 and lin.ci_low.iloc[0] <= lin.value.iloc[0] <= lin.ci_high.iloc[0]
    assert (table[table.protocol == "calibration-linear"].group.str.startswith("sex=")).any()
    assert (table[(table.protocol == "fairness-linear") & (table.metric == "auroc")].group.str.startswith("sex=")).any()
    ranks = [r for r in data["ranks"] if r["protocol"] == "linear"]
    assert sorted(r["rank"] for r in ranks) == [1, 2]
    pt = [p for p in data["paired_tests"] if p["protocol"] == "linear"]
    assert len(pt) == 1 and pt[0]["backbone"] == "a2" and 0 < pt[0]["p_value"] <= 1
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64") >= 3 and "Paired tests" in html
    assert (out / "plots" / "forest_ham10000-sample.png").is_file()
    md = (out / "report.md").read_text()
    assert "Per-group values" in md


def test_contaminated_benchmark_is_flagged_and_unranked(fake_vl, tmp_path):
    from dermino.cli import main
    from dermino.data.manifest import read_manifest, write_manifest
    from dermino.evaluate.runner import prepare_dataset

    cfg_path = _config(tmp_path, [{"name": "clean", "model": NAME}], protocols=["linear"])
    data = yaml.safe_load(cfg_path.read_text())
    ds = prepare_dataset(DatasetSpec(name="x", manifest=data["datasets"][0]["manifest"]))
    test = ds.df[ds.split == "test"]
    corpus = test.iloc[: len(test) // 3].copy()  # a third of the benchmark's test images are in the corpus
    corpus.attrs["root"] = ds.df.attrs["root"]
    write_manifest(corpus, tmp_path / "corpus.csv", root=ds.df.attrs["root"])
    assert len(read_manifest(tmp_path / "corpus.csv")) == len(corpus)
    data["backbones"].append({"name": "leaky", "model": NAME, "overrides": {"seed": 5},
                              "corpus": [str(tmp_path / "corpus.csv")]})
    cfg_path.write_text(yaml.safe_dump(data))
    assert main(["leaderboard", "--config", str(cfg_path), "--preset", "dermino-paper", "protocols=[linear]"]) == 0
    lb = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    share = [r for r in lb["rows"] if r["protocol"] == "contamination" and r["backbone"] == "leaky"][0]["value"]
    assert share == pytest.approx(1 / 3, abs=0.02)
    leaky = [r for r in lb["ranks"] if r["backbone"] == "leaky" and r["protocol"] == "linear"][0]
    assert leaky["rank"] is None and not leaky["ranked"] and "not ranked" in leaky["note"]
    assert [r["rank"] for r in lb["ranks"] if r["backbone"] == "clean" and r["protocol"] == "linear"] == [1]
    # the user may rank it anyway (finished cells are not recomputed)
    assert main(["leaderboard", "--config", str(cfg_path), "--preset", "dermino-paper", "protocols=[linear]",
                 "--allow-contaminated"]) == 0
    lb = json.loads((tmp_path / "lb" / "leaderboard.json").read_text())
    assert [r for r in lb["ranks"] if r["backbone"] == "leaky" and r["protocol"] == "linear"][0]["rank"] in (1, 2)


def _write_preds(out: Path, bb: str, y: np.ndarray, score: np.ndarray) -> None:
    from dermino.results import result_filename

    folder = cell_dir(out, bb, "d") / "predictions"
    folder.mkdir(parents=True, exist_ok=True)
    probs = np.stack([1 - score, score], 1)
    np.savez(folder / (Path(result_filename(bb, "d", "linear")).stem + ".npz"), images=np.arange(len(y)).astype(str),
             y_true=y, probs=probs, pred=probs.argmax(1), class_names=np.array(["neg", "pos"]))


def _seed_case(tmp_path: Path, gains: list[float], seeds: int = 3) -> dict:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 600)
    noise = rng.normal(size=(seeds, 600))
    out = tmp_path / f"case{len(gains)}{gains[0]}"
    names = []
    for s in range(seeds):
        base = noise[s] * 1.0 + 1.0 * y
        _write_preds(out, f"ssl@seed{s}", y, 1 / (1 + np.exp(-base)))
        better = base + gains[s] * y + rng.normal(size=600) * 0.3
        _write_preds(out, f"hybrid@seed{s}", y, 1 / (1 + np.exp(-better)))
        names += [f"ssl@seed{s}", f"hybrid@seed{s}"]
    cfg = EvalConfig(backbones=[BackboneSpec(n) for n in names], datasets=[DatasetSpec("d", "m.csv")], bootstrap=200)
    rows = seed_comparisons(out, cfg, "ssl@seed0", min_seeds=3)
    assert len(rows) == 1
    return rows[0]


def test_seed_comparison_significant_only_when_every_seed_agrees(tmp_path):
    agree = _seed_case(tmp_path, [1.5, 1.5, 1.5])
    assert agree["recipe"] == "hybrid" and agree["n_seeds"] == 3 and agree["mean_diff"] > 0
    assert agree["holds_across_seeds"] and agree["significant"]
    assert agree["sd"] >= 0 and len(agree["pairs"]) == 3
    flip = _seed_case(tmp_path, [1.5, 1.5, -1.5])  # one seed goes the other way
    assert not flip["significant"]
    few = _seed_case(tmp_path, [1.5, 1.5], seeds=2)
    assert few["holds_across_seeds"] and not few["significant"] and "fewer than 3" in few["note"]


@pytest.mark.slow
def test_demo_leaderboard_function(fake_vl, tmp_path):
    from dermino.data.sample import sample_manifests
    from dermino.evaluate.leaderboard import demo_leaderboard
    from dermino.report.leaderboard import write_leaderboard_report

    ph2 = sample_manifests(tmp_path / "m")["ph2"]
    out = demo_leaderboard([BackboneSpec("x", NAME), BackboneSpec("y", NAME, overrides={"seed": 2})],
                           [DatasetSpec("ph2-sample", str(ph2))], tmp_path / "lb",
                           embed={"image_size": 28, "cache_dir": str(tmp_path / "c")}, bootstrap=20)
    html, _ = write_leaderboard_report(out)
    table = pd.read_csv(out / "leaderboard.csv")
    assert {"x", "y"} == set(table.backbone) and "data:image/png;base64" in html.read_text()
    from _net import CHROMIUM, chromium

    if not CHROMIUM:
        pytest.skip("no chromium")
    driver = chromium(tmp_path, 1200, 1600)
    try:
        driver.get(html.resolve().as_uri())
        widths = driver.execute_script("return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)")
    finally:
        driver.quit()
    assert widths and all(w > 100 for w in widths)  # every plot decoded and rendered


def test_a_cell_is_recomputed_when_its_weights_change_under_the_same_name(tmp_path, caplog):
    """Retraining a backbone and rerunning the leaderboard under the same name must not reuse the
    old numbers; an unchanged rerun reuses them."""
    import logging

    import torch

    from dermino.data.sample import sample_manifests
    from dermino.evaluate.leaderboard import LeaderboardOptions, run_leaderboard
    from dermino.models import create

    tiny = {"depth": 1, "embed_dim": 32, "num_heads": 2, "img_size": 28}
    weights = tmp_path / "teacher_backbone.pt"

    def save(seed: int) -> None:
        torch.manual_seed(seed)
        torch.save(create("dermino_vit_tiny_14", **tiny).state_dict(), weights)

    ham = sample_manifests(tmp_path / "manifests")["ham10000"]
    cfg = EvalConfig(out_dir=str(tmp_path / "lb"), protocols=["knn"], bootstrap=20, progress=False,
                     backbones=[BackboneSpec(name="mine", model="dermino_vit_tiny_14", weights=str(weights),
                                             overrides=tiny)],
                     datasets=[DatasetSpec(name="ham", manifest=str(ham))])
    cfg.embed.image_size, cfg.embed.cache_dir = 28, str(tmp_path / "cache")
    status = cell_dir(tmp_path / "lb", "mine", "ham") / "status.json"

    def auroc() -> float:
        t = pd.read_csv(tmp_path / "lb" / "leaderboard.csv")
        return float(t[(t.metric == "auroc") & (t.group.fillna("") == "")].value.iloc[0])

    save(0)
    run_leaderboard(cfg, LeaderboardOptions())
    first, stamp, print_ = auroc(), status.stat().st_mtime_ns, json.loads(status.read_text())["fingerprint"]
    run_leaderboard(cfg, LeaderboardOptions())  # nothing changed: reused
    assert status.stat().st_mtime_ns == stamp and auroc() == first
    save(1)  # retrained under the same name
    with caplog.at_level(logging.WARNING, logger="dermino.evaluate.leaderboard"):
        run_leaderboard(cfg, LeaderboardOptions())
    assert "other weights" in caplog.text
    assert json.loads(status.read_text())["fingerprint"] != print_
    assert auroc() != first
