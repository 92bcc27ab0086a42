"""Live progress: an execution's projected events as they land, for ``GET /api/executions/{id}/stream``.

Built on the read model ``noetl.event``. The projection insert notifies
``store.EVENT_CHANNEL`` in its transaction, naming the executions it projected events of;
one LISTEN connection per process (:class:`~..store.KeyedNotifier` on that channel) wakes
the open streams of those executions only (every stream when the batch was too wide to
name them, or after a reconnect), which then read what was projected since they last looked.

Order: projection order (``projected_at``, then ``event_id``), not ``event_id`` order — a
worker's event id is minted when the worker builds it, so an event may be projected
after one with a larger id. Each read goes back :data:`OVERLAP_SECONDS` before the last
projection time seen (two projection transactions may overlap) and skips the events the
stream already sent. A resume (``Last-Event-ID``) starts right after that event in the
same order. The stream ends right after the execution's terminal event
(``playbook.completed|failed|cancelled``), or at once when that event is already behind
the resume point. While nothing happens it yields ``None`` every
:data:`KEEPALIVE_SECONDS` (sent as an SSE comment); while the listener is disconnected
it re-reads at least every :data:`FALLBACK_POLL_SECONDS`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime, timedelta

from noetl_common import Event
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import NotFound
from .._metrics import STREAM_WAKEUPS
from ..store import KeyedNotifier
from ._executions import scrub_event

TERMINAL_EVENTS = frozenset({"playbook.completed", "playbook.failed", "playbook.cancelled"})
KEEPALIVE_SECONDS = 15.0
FALLBACK_POLL_SECONDS = 1.0
OVERLAP_SECONDS = 2.0
PAGE = 500


class EventStreamService:
    """Follows one execution's events; see the module docstring."""

    def __init__(self, pool: AsyncConnectionPool, notifier: KeyedNotifier, *, page_max_bytes: int) -> None:
        self._pool = pool
        self._notifier = notifier
        self._page_max_bytes = page_max_bytes
        #: how many streams are waiting for their execution's next event
        self.waiting = 0
        #: notified whenever a stream parks to wait; lets callers observe open streams
        self.parked = asyncio.Condition()

    async def check(self, execution_id: int, after: int = 0) -> None:
        """NotFound for an unknown execution or resume point (before the response starts)."""
        async with self._pool.connection() as conn:
            if await store.executions.get(conn, execution_id) is None:
                raise NotFound(f"execution {execution_id} not found")
            if after and await store.events.projected_at(conn, execution_id, after) is None:
                raise NotFound(f"event {after} of execution {execution_id} is not projected")

    async def follow(self, execution_id: int, after: int = 0) -> AsyncGenerator[Event | None, None]:
        """Events projected after event ``after`` (0: all), until the terminal one; ``None`` = keep-alive."""
        overlap = timedelta(seconds=OVERLAP_SECONDS)
        sent: set[int] = set()
        horizon: datetime | None = None  # the latest projected_at seen
        if after:
            async with self._pool.connection() as conn:
                horizon = await store.events.projected_at(conn, execution_id, after)
                assert horizon is not None  # check() made sure
                if await store.events.has_terminal_event(conn, execution_id, horizon - overlap):
                    return  # the stream had ended well before the resume point
                done, _ = await store.events.projected_since(
                    conn, execution_id, horizon - overlap, None, 100_000
                )
            # what the client already has: everything up to `after` in projection order
            for at, event in done:
                assert event.event_id is not None
                sent.add(event.event_id)
                if event.event_type in TERMINAL_EVENTS:
                    return
                if (at, event.event_id) == (horizon, after):
                    break
        while True:
            # registered before the read: a NOTIFY after it still wakes us
            with self._notifier.watch(execution_id) as wake:
                new = 0
                keyset: tuple[datetime, int] | None = None
                since = None if horizon is None else horizon - overlap
                while True:
                    async with self._pool.connection() as conn:
                        page, cut = await store.events.projected_since(
                            conn, execution_id, since, keyset, PAGE, self._page_max_bytes
                        )
                    for at, event in page:
                        assert event.event_id is not None
                        keyset = (at, event.event_id)
                        horizon = at if horizon is None or at > horizon else horizon
                        if event.event_id in sent:
                            continue
                        sent.add(event.event_id)
                        new += 1
                        yield scrub_event(event)
                        if event.event_type in TERMINAL_EVENTS:
                            return
                    if len(page) < PAGE and not cut:
                        break
                if new:
                    continue  # more may have landed while we sent
                timeout = KEEPALIVE_SECONDS if self._notifier.connected else FALLBACK_POLL_SECONDS
                if not await self._park(wake, timeout):
                    yield None

    async def _park(self, wake: asyncio.Event, timeout: float) -> bool:
        """Wait for ``wake`` at most ``timeout`` seconds; whether it was set."""
        self.waiting += 1
        async with self.parked:
            self.parked.notify_all()
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            return False
        finally:
            self.waiting -= 1
        STREAM_WAKEUPS.inc()
        return True
