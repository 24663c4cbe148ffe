"""``dermino serve --workers N``: real worker processes on a loopback port, and what they share.

The server runs as a subprocess (``python -m dermino.cli serve --workers 2``) with a tiny saved
classifier; the test reads which workers answered from ``/health``, classifies a real image
through it, and checks that shutting it down leaves no process and no run folder behind.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from _net import free_port
from _serve_fixtures import ham_images, tiny_classifier
from dermino.classifier.model import save_classifier
from dermino.serve.uploads import UploadLimits, save_upload
from dermino.serve.workers import ServeSettings, build_app, claim_index, default_torch_threads

START_S = 180  # spawning two workers that import torch, on a shared 2-core machine
SPREAD_S = 30  # how long new connections may take to reach both workers


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(p) for p in text]
    return found


def gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its new parent to reap it counts as exited)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


def is_worker(pid: int) -> bool:
    """uvicorn's workers are ``multiprocessing`` spawns (not its resource tracker)."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


def serve(args: list[str], tmp: Path) -> tuple[subprocess.Popen, str, Path]:
    """The server as a subprocess; its output goes to a file (a pipe nobody reads would fill up)."""
    port = free_port()
    (tmp / "tmp").mkdir(exist_ok=True)
    log = tmp / "server.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp / "tmp")}
    cmd = [sys.executable, "-m", "dermino.cli", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}", log


def wait_healthy(proc: subprocess.Popen, url: str, log: Path) -> dict:
    deadline = time.monotonic() + START_S
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited: {log.read_text()[-3000:]}"
        try:
            r = httpx.get(f"{url}/health", timeout=5)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"no healthy server at {url} within {START_S} s")


@pytest.mark.slow  # three processes import torch: 15 s on a quiet 2-core machine, minutes under load
def test_two_workers_share_the_port_classify_and_stop_cleanly(tmp_path):
    clf = tiny_classifier()
    folder = save_classifier(clf, tmp_path / "clf")
    proc, url, log = serve(["--classifier", str(folder), "--workers", "2", "--torch-threads", "1"], tmp_path)
    kids: list[int] = []
    try:
        first = wait_healthy(proc, url, log)
        assert first["worker"]["workers"] == 2 and first["worker"]["index"] in (0, 1)
        # every request on a new connection: the kernel hands each to whichever worker accepts it
        seen = {first["worker"]["pid"]: first["worker"]["index"]}
        deadline = time.monotonic() + SPREAD_S
        while len(seen) < 2 and time.monotonic() < deadline:
            w = httpx.get(f"{url}/health", timeout=30).json()["worker"]
            seen[w["pid"]] = w["index"]
        kids = children(proc.pid)
        workers = [p for p in kids if is_worker(p)]
        assert len(workers) == 2 and not any(gone(p) for p in workers)
        assert set(seen) <= set(workers), "every answering pid is one of the server's worker processes"
        if len(seen) == 2:
            assert sorted(seen.values()) == [0, 1], "the two workers hold different indexes"
        else:  # the kernel never spread the connections within the bound: both workers still run
            print(f"only worker pid {list(seen)} answered within {SPREAD_S} s")

        image = ham_images(1)[0]
        r = httpx.post(f"{url}/classify", params={"top_k": 7}, timeout=60,
                       files={"file": (image.name, image.read_bytes(), "image/jpeg")})
        assert r.status_code == 200, r.text
        expected, _ = clf.predict([Image.open(io.BytesIO(image.read_bytes())).convert("RGB")])
        top = r.json()["predictions"][0]
        assert top["label"] == clf.label_names[int(expected.argmax())]
        assert top["probability"] == pytest.approx(float(expected.max()), abs=1e-5)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            for p in kids:
                if not gone(p):
                    os.kill(p, signal.SIGKILL)
            raise
    assert proc.returncode == 0, log.read_text()[-3000:]
    deadline = time.monotonic() + 20
    while not all(gone(p) for p in kids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert kids and all(gone(p) for p in kids), "orphan processes left after shutdown"
    assert list((tmp_path / "tmp").iterdir()) == [], "the workers' run folder is removed"


@pytest.mark.slow  # as above
def test_a_worker_that_cannot_load_stops_the_server_with_the_reason(tmp_path):
    folder = save_classifier(tiny_classifier(), tmp_path / "clf")
    (folder / "model.safetensors").unlink()  # the description is there (preflight passes), the weights are not
    proc, _, log = serve(["--classifier", str(folder), "--workers", "2", "--torch-threads", "1"], tmp_path)
    try:
        proc.wait(timeout=START_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out = log.read_text()
    assert proc.returncode == 2, out[-3000:]
    assert "could not start" in out and "model.safetensors" in out
    assert list((tmp_path / "tmp").iterdir()) == []


def test_bad_folders_are_refused_before_any_worker_starts(tmp_path, monkeypatch, capsys):
    import uvicorn

    from dermino.cli import main

    def never(*a, **kw):
        raise AssertionError("uvicorn must not start")

    monkeypatch.setattr(uvicorn, "run", never)
    port = str(free_port())
    assert main(["serve", "--classifier", str(tmp_path / "nothing"), "--workers", "2", "--port", port]) == 2
    assert "classifier.json" in capsys.readouterr().err
    folder = save_classifier(tiny_classifier(), tmp_path / "clf")
    assert main(["serve", "--classifier", str(folder), "--index", str(tmp_path), "--workers", "2", "--port", port]) == 2
    assert "no index.json" in capsys.readouterr().err
    assert main(["serve", "--classifier", str(folder), "--workers", "0", "--port", port]) == 2
    assert "workers=0" in capsys.readouterr().err


def test_settings_travel_as_json_and_are_checked():
    s = ServeSettings(classifier="runs/clf", index="runs/index", workers=3, torch_threads=2,
                      limits=UploadLimits(max_bytes=1000, save_dir="keep"))
    back = ServeSettings.from_env(s.to_env())
    assert back == s and isinstance(back.limits, UploadLimits) and isinstance(back.limits.content_types, tuple)
    with pytest.raises(ValueError, match="workers"):
        ServeSettings.from_env(ServeSettings(classifier="c").to_env().replace('"workers": 1', '"workers": 0'))
    with pytest.raises(ValueError, match="classifier"):
        ServeSettings(classifier="").validate()
    assert default_torch_threads(1) == 0 and default_torch_threads(10_000) == 1


def test_build_app_is_the_one_process_server(tmp_path):
    """``--workers 1`` builds the app in the serving process itself, from the same settings."""
    from fastapi.testclient import TestClient

    folder = save_classifier(tiny_classifier(), tmp_path / "clf")
    app = build_app(ServeSettings(classifier=str(folder), max_batch=4, limits=UploadLimits(max_bytes=300_000)))
    with TestClient(app) as c:
        h = c.get("/health").json()
        assert h["worker"] == {"pid": os.getpid(), "index": 0, "workers": 1}
        image = ham_images(1)[0]
        r = c.post("/classify", files={"file": (image.name, image.read_bytes(), "image/jpeg")})
        assert r.status_code == 200 and len(r.json()["predictions"]) == 5
        assert c.post("/classify", files={"file": ("big.jpg", b"x" * 400_000, "image/jpeg")}).status_code == 413
    assert app.state.service.batcher.max_batch == 4


def test_worker_indexes_are_distinct_and_freed_when_a_worker_ends(tmp_path):
    a, lock_a = claim_index(str(tmp_path))
    b, lock_b = claim_index(str(tmp_path))
    assert (a, b) == (0, 1)
    lock_a.close()  # what the kernel does when worker 0 dies
    c, lock_c = claim_index(str(tmp_path))
    assert c == 0
    lock_b.close()
    lock_c.close()
    assert claim_index("") == (0, None)


def _save_for_a_second(data: bytes, keep: str, go) -> None:
    go.wait(30)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        save_upload(data, "lesion.jpg", keep)


def test_the_same_upload_saved_by_several_processes_at_once_is_whole(tmp_path):
    """Workers write saved uploads into one folder: each write goes through its own temporary file."""
    data = os.urandom(2_000_000)
    fork = multiprocessing.get_context("fork")  # the savers only write files: no torch in the children
    go = fork.Event()
    procs = [fork.Process(target=_save_for_a_second, args=(data, str(tmp_path / "keep"), go)) for _ in range(2)]
    for p in procs:
        p.start()
    go.set()  # both start saving at the same moment
    for p in procs:
        p.join(60)
        assert p.exitcode == 0, "a saver failed (its traceback is above)"
    files = sorted(p.name for p in (tmp_path / "keep").iterdir())
    assert len(files) == 2, files  # the image and its sidecar: no temporary file left
    assert (tmp_path / "keep" / files[0]).read_bytes() == data
