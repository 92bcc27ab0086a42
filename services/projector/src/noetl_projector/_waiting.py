"""Capped exponential backoff with jitter, interruptible by the stop event."""

from __future__ import annotations

import asyncio
import contextlib
import random


class Backoff:
    """Delays 0.1 s, 0.2 s, ... up to ``maximum``, with up to 50 % jitter; ``reset`` on success."""

    def __init__(self, maximum: float, initial: float = 0.1) -> None:
        self.maximum = maximum
        self.initial = initial
        self._next = initial

    def next(self) -> float:
        """The delay to wait now; the following one doubles."""
        delay = self._next
        self._next = min(self.maximum, self._next * 2)
        return min(self.maximum, delay * (1 + random.random() / 2))

    def reset(self) -> None:
        self._next = self.initial


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stop`` is set first; returns True when stopping."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
