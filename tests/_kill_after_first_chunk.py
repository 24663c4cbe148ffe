"""``python -m dermino.cli`` for a torchrun test, except that the rank named by
``DERMINO_TEST_KILL_RANK`` kills itself with SIGKILL right after writing its first embedding
chunk: a crash at a known point, with no chance to clean up, as an out-of-memory kill would be."""

from __future__ import annotations

import os
import signal
import sys

from dermino.cli import main
from dermino.features import extract

if os.environ.get("RANK") == os.environ.get("DERMINO_TEST_KILL_RANK"):
    _save = extract._save_atomic

    def _save_then_die(path, arr) -> None:
        _save(path, arr)
        os.kill(os.getpid(), signal.SIGKILL)

    extract._save_atomic = _save_then_die

sys.exit(main(sys.argv[1:]))
