"""``dermino federate client`` stops its SuperNode (and what it started) on SIGTERM, not only on Ctrl-C."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import pytest

from dermino.federated import deployment
from dermino.federated.deployment import TLS, run_client


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_stops_the_supernode_and_its_children(tmp_path, monkeypatch):
    pids = tmp_path / "pids"
    # a stand-in SuperNode that starts a child of its own (as the real one starts ClientApps)
    script = ("import os, subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pids)!r}, 'w').write(f'{{os.getpid()}} {{child.pid}}')\n"
              "time.sleep(15)\n")
    monkeypatch.setattr(deployment, "supernode_command", lambda *a: [sys.executable, "-c", script])
    unhandled = []
    previous = signal.signal(signal.SIGTERM, lambda *a: unhandled.append(a))  # old code: would not stop

    def term_when_started():
        deadline = time.monotonic() + 20
        while not (pids.is_file() and pids.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=term_when_started, daemon=True).start()
    start = time.monotonic()
    try:
        rc = run_client("unused.yaml", "0", "127.0.0.1:1", "127.0.0.1:2", TLS())
    finally:
        signal.signal(signal.SIGTERM, previous)
    took = time.monotonic() - start
    assert rc == 0 and not unhandled and took < 20, (rc, unhandled, took)
    node, child = map(int, pids.read_text().split())
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    # both gone: the child was in the SuperNode's session and got the SIGTERM too
    assert not _alive(node) and not _alive(child)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a parent to reap it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
