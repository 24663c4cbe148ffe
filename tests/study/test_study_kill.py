"""``dermino study serve`` killed with SIGKILL mid-study: no acknowledged answer is lost, the reader resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from _net import free_port
from _study_fixtures import make_study

SRC = Path(__file__).resolve().parents[2] / "src"


def start(folder: Path, port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dermino.cli", "study", "serve", str(folder), "--port", str(port)],
                            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/study/reader.html", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_sigkill_loses_nothing_and_reader_resumes(tmp_path):
    made = make_study(tmp_path, n_cases=4, index=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}/study/api"
    h = {"X-Study-Token": made.reader_tokens["alice"]}
    proc = start(made.folder, port, tmp_path / "server.log")
    acked = []
    try:
        labels = httpx.get(f"{url}/me", headers=h).json()["labels"]
        for k in range(3):  # three acknowledged answers, then a fourth case is on screen
            case = httpx.get(f"{url}/current", headers=h).json()["case"]
            r = httpx.post(f"{url}/answers", headers=h, json={
                "case_id": case["id"], "round": 1, "diagnosis": labels[k % len(labels)], "confidence": k + 1,
                "seconds": 2.0})
            assert r.status_code == 201
            acked.append((case["id"], labels[k % len(labels)], k + 1))
        on_screen = httpx.get(f"{url}/current", headers=h).json()["case"]["id"]
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    proc = start(made.folder, port, tmp_path / "server.log")
    try:
        mine = httpx.get(f"{url}/answers", headers=h).json()
        assert [(a["case_id"], a["diagnosis"], a["confidence"]) for a in mine] == acked
        state = httpx.get(f"{url}/current", headers=h).json()
        assert state["progress"]["done"]["1"] == 3 and state["case"]["id"] == on_screen  # resumes where it stopped
        r = httpx.post(f"{url}/answers", headers=h, json={
            "case_id": on_screen, "round": 1, "diagnosis": labels[0], "confidence": 5, "seconds": 1.0})
        assert r.status_code == 201 and r.json()["progress"]["round"] == 2
    finally:
        proc.terminate()
        proc.wait(timeout=10)
