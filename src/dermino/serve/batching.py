"""Micro-batching: concurrent requests share one forward pass.

A ViT forward on 16 images costs far less than 16 forwards on one, so requests arriving
together are queued and run as one batch: the worker takes the first item, waits at most
``max_wait_s`` for more (up to ``max_batch``) and calls ``fn`` once. Under low load the
wait adds a few milliseconds; under high load batches fill up and throughput rises. A
thread (not an event-loop task) runs the worker, so it works with any event loop and test
client; callers await a ``concurrent.futures.Future``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MicroBatcher(Generic[T, R]):
    def __init__(self, fn: Callable[[Sequence[T]], Sequence[R]], max_batch: int = 16, max_wait_s: float = 0.005):
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError("max_batch >= 1 and max_wait_s >= 0 are required")
        self.fn, self.max_batch, self.max_wait_s = fn, max_batch, max_wait_s
        self._queue: queue.Queue[tuple[T, Future] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.batches = 0
        self.items = 0
        self.largest = 0

    def submit(self, item: T) -> Future:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="dermino-batcher", daemon=True)
                self._thread.start()
        fut: Future = Future()
        self._queue.put((item, fut))
        return fut

    async def __call__(self, item: T) -> R:
        return await asyncio.wrap_future(self.submit(item))

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=5)

    def stats(self) -> dict[str, Any]:
        return {"batches": self.batches, "items": self.items, "largest_batch": self.largest,
                "mean_batch": round(self.items / self.batches, 2) if self.batches else 0.0}

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            deadline = time.monotonic() + self.max_wait_s
            while len(batch) < self.max_batch:
                remaining = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=max(0.0, remaining)) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            items = [b[0] for b in batch]
            try:
                results = list(self.fn(items))
                if len(results) != len(items):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
            except Exception as exc:  # every caller of the batch sees the error
                for _, fut in batch:
                    fut.set_exception(exc)
                continue
            self.batches += 1
            self.items += len(items)
            self.largest = max(self.largest, len(items))
            for (_, fut), res in zip(batch, results, strict=True):
                fut.set_result(res)
