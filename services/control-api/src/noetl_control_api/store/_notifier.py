"""One LISTEN connection per process and channel, fanning wake-ups out to long-poll waiters.

Three channels: :data:`OUTBOX_CHANNEL` (publishers' claims), :data:`EVENT_CHANNEL`
(execution event streams, notified by the ``noetl.event`` projection, payload the execution
ids of the events projected) and :data:`EXECUTION_DONE_CHANNEL` (``GET
/api/executions/{id}?wait=``, notified by a trigger when an execution leaves RUNNING, payload
the execution id). On the two keyed channels :class:`KeyedNotifier` wakes only the waiters
of the executions named.

Writers ``NOTIFY`` on :data:`OUTBOX_CHANNEL` in the transaction that inserts outbox rows,
so the notification is delivered exactly when the rows become visible. Each wake-up
sets the current :class:`asyncio.Event` and replaces it with a fresh one. A waiter takes
the current event *before* it looks for rows, so a notification that lands between its
empty query and its wait is never lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
import structlog

OUTBOX_CHANNEL = "noetl_outbox"
#: notified by the projection insert into ``noetl.event`` (payload: the execution ids projected,
#: comma-separated, or :data:`WAKE_ALL`); wakes the SSE streams of those executions
EVENT_CHANNEL = "noetl_event"
#: the payload that wakes every waiter of a keyed channel: a batch whose keys do not fit
WAKE_ALL = "*"
#: Postgres refuses a NOTIFY payload of 8000 bytes or more
PAYLOAD_MAX_BYTES = 7999
#: notified by the trigger of migration 0006 when an execution leaves RUNNING (payload: its id)
EXECUTION_DONE_CHANNEL = "noetl_execution_done"
_PROBE_SECONDS = 30.0
#: how the listening connection shows up in pg_stat_activity
LISTENER_APPLICATION_NAME = "noetl-control-api-listener"
log = structlog.get_logger(__name__)


class _Listener:
    """Owns the listening connection and reconnects it when it drops."""

    def __init__(self, database_url: str, channel: str) -> None:
        self._database_url = database_url
        self._channel = channel
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self.connected = False

    def wake(self) -> None:
        """Wake every waiter."""
        raise NotImplementedError

    def _notified(self, payload: str) -> None:
        """One notification arrived."""
        raise NotImplementedError

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
                    # notifications may have been sent while we were disconnected
                    self.wake()
                    while True:
                        async for notify in conn.notifies(timeout=_PROBE_SECONDS):
                            self._notified(notify.payload)
                        # a quiet period: prove the connection is alive (a silently dropped
                        # TCP connection would otherwise leave waiters to their timeouts forever)
                        await conn.execute("SELECT 1")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listener_disconnected", channel=self._channel, error=str(exc), retry_in=backoff)
            finally:
                self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(5.0, backoff * 2)


class OutboxNotifier(_Listener):
    """Every notification of the channel wakes every waiter."""

    def __init__(self, database_url: str, channel: str = OUTBOX_CHANNEL) -> None:
        super().__init__(database_url, channel)
        self._event = asyncio.Event()

    def current(self) -> asyncio.Event:
        """The event the next notification will set; take it before querying."""
        return self._event

    def wake(self) -> None:
        """Wake every waiter (also used when this process itself inserted rows)."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _notified(self, payload: str) -> None:
        self.wake()


class _Slot:
    """The waiters of one key: the event its next notification sets, and how many hold it."""

    __slots__ = ("event", "holders")

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.holders = 0


class KeyedNotifier(_Listener):
    """A notification whose payload is an integer key, or several comma-separated, wakes only
    the waiters of those keys; the payload :data:`WAKE_ALL` wakes every key.

    A reconnect (or :meth:`stop`) wakes every key: notifications may have been missed."""

    def __init__(self, database_url: str, channel: str = EXECUTION_DONE_CHANNEL) -> None:
        super().__init__(database_url, channel)
        self._slots: dict[int, _Slot] = {}

    @contextlib.contextmanager
    def watch(self, key: int) -> Iterator[asyncio.Event]:
        """The event the next notification of ``key`` sets; enter before querying.

        Waiters of the same key share one event; it is dropped when its last holder leaves."""
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        slot.holders += 1
        try:
            yield slot.event
        finally:
            slot.holders -= 1
            if not slot.holders and self._slots.get(key) is slot:
                del self._slots[key]

    @property
    def keys(self) -> int:
        """How many keys have waiters."""
        return len(self._slots)

    def wake_key(self, key: int) -> None:
        slot = self._slots.pop(key, None)
        if slot is not None:
            slot.event.set()

    def wake(self) -> None:
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            slot.event.set()

    def _notified(self, payload: str) -> None:
        if payload == WAKE_ALL:
            self.wake()
            return
        for part in payload.split(","):
            try:
                key = int(part)
            except ValueError:
                log.warning("notification_key_invalid", channel=self._channel, payload=part[:40])
                continue
            self.wake_key(key)
