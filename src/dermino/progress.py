"""Progress that suits where the output goes: a tqdm bar on a terminal, periodic log lines otherwise.

A bar redrawn with carriage returns is unreadable in a log file or a CI log (one "line" holding
thousands of updates). When stderr is not a terminal, :func:`tqdm` returns :class:`LogProgress`,
which logs ``desc: n/total (p%), rate, ETA`` at most every ``DERMINO_PROGRESS_SECONDS`` (default
30) seconds and once at the end. Same call signature as ``tqdm`` for what dermino uses.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm as _tqdm

log = logging.getLogger("dermino.progress")


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("DERMINO_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


class LogProgress:
    """The subset of tqdm dermino uses (iterate, update, set_postfix, close), as log lines."""

    def __init__(self, iterable: Iterable | None = None, total: float | None = None, desc: str = "",
                 initial: float = 0, disable: bool = False, unit: str = "it", every: float | None = None,
                 **_ignored: Any):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.disable = total, desc or "progress", unit, disable
        self.n = self.start_n = initial
        self.every = _interval() if every is None else every
        self.t0 = self.last = time.monotonic()
        self.postfix = ""
        self.closed = False

    def __iter__(self) -> Iterator:
        assert self.iterable is not None
        try:
            for item in self.iterable:
                yield item
                self.update(1)
        finally:
            self.close()

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        now = time.monotonic()
        if not self.disable and now - self.last >= self.every:
            self.last = now
            self._log()

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs: Any) -> None:
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def _line(self) -> str:
        elapsed = time.monotonic() - self.t0
        rate = (self.n - self.start_n) / elapsed if elapsed > 0 else 0.0
        if self.total:
            pct = f" ({100 * self.n / self.total:.0f}%)"
            left = (self.total - self.n) / rate if rate > 0 else float("nan")
            eta = f", ETA {left:.0f}s" if left == left else ""
            done = f"{self.n:g}/{self.total:g} {self.unit}{pct}"
        else:
            done, eta = f"{self.n:g} {self.unit}", ""
        post = f" [{self.postfix}]" if self.postfix else ""
        return f"{self.desc}: {done}, {rate:.2f} {self.unit}/s, {elapsed:.0f}s elapsed{eta}{post}"

    def _log(self) -> None:
        log.info(self._line())

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        if not self.closed and not self.disable and self.n > self.start_n:
            self._log()
        self.closed = True


def is_terminal(stream: Any = None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def tqdm(iterable: Iterable | None = None, *args: Any, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm`` on a terminal, :class:`LogProgress` when stderr is a file or a pipe."""
    if is_terminal():
        return _tqdm(iterable, *args, **kwargs)
    return LogProgress(iterable, *args, **kwargs)
