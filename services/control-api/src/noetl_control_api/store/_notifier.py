"""One LISTEN connection per process and channel, fanning wake-ups out to long-poll waiters.

Two channels: :data:`OUTBOX_CHANNEL` (publishers' claims) and :data:`EVENT_CHANNEL`
(execution event streams, notified by the ``noetl.event`` projection).

Writers ``NOTIFY`` on :data:`OUTBOX_CHANNEL` in the transaction that inserts outbox rows,
so the notification is delivered exactly when the rows become visible. Each wake-up
sets the current :class:`asyncio.Event` and replaces it with a fresh one. A waiter takes
the current event *before* it looks for rows, so a notification that lands between its
empty query and its wait is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import psycopg
import structlog

OUTBOX_CHANNEL = "noetl_outbox"
#: notified by the projection insert into ``noetl.event`` (wakes the SSE streams)
EVENT_CHANNEL = "noetl_event"
_PROBE_SECONDS = 30.0
#: how the listening connection shows up in pg_stat_activity
LISTENER_APPLICATION_NAME = "noetl-control-api-listener"
log = structlog.get_logger(__name__)


class OutboxNotifier:
    """Owns the listening connection and reconnects it when it drops."""

    def __init__(self, database_url: str, channel: str = OUTBOX_CHANNEL) -> None:
        self._database_url = database_url
        self._channel = channel
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.connected = False

    def current(self) -> asyncio.Event:
        """The event the next notification will set; take it before querying."""
        return self._event

    def wake(self) -> None:
        """Wake every waiter (also used when this process itself inserted rows)."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def start(self, timeout: float = 10.0) -> None:
        """Start listening; returns once LISTEN is active (or after ``timeout``)."""
        self._task = asyncio.create_task(self._run(), name=f"notifier-{self._channel}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._listening.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.wake()

    async def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                conn: Any = await psycopg.AsyncConnection.connect(
                    self._database_url, autocommit=True, application_name=LISTENER_APPLICATION_NAME
                )
                async with conn:
                    await conn.execute(f"LISTEN {self._channel}")
                    self.connected = True
                    self._listening.set()
                    backoff = 0.1
                    # rows may have been inserted while we were disconnected
                    self.wake()
                    while True:
                        async for _ in conn.notifies(timeout=_PROBE_SECONDS):
                            self.wake()
                        # a quiet period: prove the connection is alive (a silently dropped
                        # TCP connection would otherwise leave waiters to their timeouts forever)
                        await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox listener disconnected", error=str(exc), retry_in=backoff)
            finally:
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(5.0, backoff * 2)
