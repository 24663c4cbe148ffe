"""Launch ``dermino.cli`` under torchrun the way a user would: gloo on CPU, one thread a process.

Used by the tests of the sharded commands (embed, index build, data dedup). ``--standalone`` picks a
free local rendezvous port, so tests may run side by side; the repository's ``src`` goes first on
the path so the processes import the code under test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from dermino.sharding import Shard

REPO = Path(__file__).resolve().parents[1]
#: a wrapper that runs the CLI but makes one rank SIGKILL itself after its first finished chunk
KILL_AFTER_FIRST_CHUNK = Path(__file__).resolve().parent / "_kill_after_first_chunk.py"


def run_torchrun(nproc: int, argv: list[str], *, script: Path | None = None, env: dict[str, str] | None = None,
                 timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "--monitor-interval=0.1", *([str(script)] if script else ["-m", "dermino.cli"]), *argv]
    path = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH", "")) if p)
    full_env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)


def printed_json(stdout: str) -> dict:
    """The JSON summary a command printed (rank 0 only; the other ranks print nothing)."""
    return json.loads(stdout[stdout.index("{"):])


def failure(res: subprocess.CompletedProcess) -> str:
    return f"exit {res.returncode}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n{res.stderr[-5000:]}"


@dataclass(frozen=True)
class UnsharedRank(Shard):
    """One rank of a several-process job run alone, in this process: no process group, no waiting,
    as if the ranks did not share a disk. Runs the ranks one after another to test the split."""

    def barrier(self) -> None:
        pass

    def total(self, count: int) -> int:
        return count

    def agree(self, value: str, what: str) -> None:
        pass
