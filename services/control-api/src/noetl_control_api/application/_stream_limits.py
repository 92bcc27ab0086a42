"""Caps on open event streams: per principal, and for the whole process.

An SSE stream holds a socket and a waiter for as long as its execution runs; without a cap,
one token could open thousands and starve the process of file descriptors. A slot is taken
before the response starts (so going over is a clean 429) and given back when the stream
ends, however it ends: its generator's ``finally``, or the generator being collected unstarted
when the client went away before the first byte.
"""

from __future__ import annotations

import weakref
from collections import Counter

from .._errors import TooManyStreams
from ._policy import Principal


class StreamSlot:
    """One open stream's place; :meth:`release` is idempotent."""

    def __init__(self, limits: StreamLimits, key: str) -> None:
        self._limits = limits
        self._key = key
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._limits._give_back(self._key)

    def bind(self, owner: object) -> None:
        """Release when ``owner`` (the response's generator) is collected, if nothing did before."""
        weakref.finalize(owner, self.release)


class StreamLimits:
    """``per_principal`` open streams for one principal, ``total`` for the process."""

    def __init__(self, *, total: int, per_principal: int) -> None:
        self.total = total
        self.per_principal = per_principal
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return sum(self._open.values())

    def acquire(self, principal: Principal) -> StreamSlot:
        """A slot for a new stream of ``principal``, or 429 ``too_many_streams``."""
        if self._open[principal.name] >= self.per_principal:
            raise TooManyStreams(
                f"{principal.describe()} has {self.per_principal} event streams open"
                " (NOETL_SSE_MAX_STREAMS_PER_PRINCIPAL); close one first",
                retry_after=5,
            )
        if self.open >= self.total:
            raise TooManyStreams(
                f"the API has {self.total} event streams open (NOETL_SSE_MAX_STREAMS); try again later",
                retry_after=5,
            )
        self._open[principal.name] += 1
        return StreamSlot(self, principal.name)

    def _give_back(self, key: str) -> None:
        self._open[key] -= 1
        if self._open[key] <= 0:
            del self._open[key]
