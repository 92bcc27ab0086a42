"""The engine's epoch ticker: advances a wasmtime engine's epoch while a call runs.

A store's epoch deadline counts from the epoch at its start, so ticks that no running call
sees change nothing: the ticker waits on a condition while no call is in progress instead
of waking every tick for nothing (on an idle worker, 1/tick_seconds wake-ups a second and a
GIL hand-off against the event loop each time).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import wasmtime


class EpochTicker:
    """One thread per engine: ``increment_epoch`` every ``tick_seconds`` while calls run."""

    def __init__(self, engine: wasmtime.Engine, tick_seconds: float) -> None:
        self._engine = engine
        self._tick_seconds = tick_seconds
        self._stop = threading.Event()
        self._active = 0  # calls running now
        self._activity = threading.Condition()
        self._thread = threading.Thread(target=self._tick, name="noetl-wasm-epoch", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while True:
            with self._activity:
                self._activity.wait_for(lambda: self._active > 0 or self._stop.is_set())
            if self._stop.wait(self._tick_seconds):
                return
            self._engine.increment_epoch()

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """One call in progress: the ticker runs meanwhile."""
        with self._activity:
            self._active += 1
            if self._active == 1:
                self._activity.notify_all()
        try:
            yield
        finally:
            with self._activity:
                self._active -= 1

    def close(self) -> None:
        """Stop the thread."""
        self._stop.set()
        with self._activity:
            self._activity.notify_all()
        self._thread.join(timeout=1.0)
