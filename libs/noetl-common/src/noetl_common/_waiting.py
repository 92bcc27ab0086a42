"""Waiting done right: capped backoff, stop-aware sleeps and the shutdown grace period."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


class GraceExpired(Exception):
    """Work still running ``grace`` seconds after stop was requested; it was cancelled."""


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


async def finish_within_grace(work: Awaitable[T], stop: asyncio.Event, grace: float) -> T:
    """Await ``work``; once ``stop`` is set, give it ``grace`` seconds more, then cancel it.

    The cancellation reaches ``work`` as ``CancelledError`` (so it can release what it
    holds); the caller gets ``GraceExpired``.
    """
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            done, _ = await asyncio.wait({task}, timeout=grace)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise GraceExpired(f"unfinished {grace}s after stop")
        return task.result()
    finally:
        stopping.cancel()
