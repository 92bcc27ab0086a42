"""The relay loop: claim outbox rows → publish to JetStream → mark published/failed.

Shape (architecture.md §6, STYLE "worker loop"): one loop long-polls ``outbox_claim``;
each batch is sent pipelined (:mod:`._acks`: one ack future per row) carrying
``Nats-Msg-Id: <execution_id>:<event_id>`` (the outbox's key); the batch is then *settled* — acks awaited, its published
rows marked once per ``OUTBOX_MARK_INTERVAL_MS`` (or per batch size of rows) — carried by
the first claim after the interval (``published``: the server marks them in the claim's
transaction), or by one ``outbox_mark_published`` call when no claim goes out within a
second interval — one ``outbox_mark_failed`` per failed row — in a task that
overlaps the next claims. At most two batch sizes of rows are in
flight: a batch that would exceed that waits for earlier settles first. A small batch
never waits for the previous one's mark-published, so a row committed meanwhile is
claimed and published at once (commit → ack latency at low rates).

Delivery is at-least-once: a row whose ack or mark-published is lost stays IN_FLIGHT,
is reclaimed after the server's lease and published again; JetStream drops the copy
by its Msg-Id within the duplicate window. A row that cannot be published — too large
for the server, or failed ``PUBLISHER_MAX_ATTEMPTS`` times — is copied to ``NOETL_DLQ``
and marked dead (:mod:`._deadletter`), never retried forever. Settling lives in
:mod:`._settle`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgspec
import structlog
from nats.aio.client import Client as NATS
from noetl_common import (
    Backoff,
    GraceExpired,
    OutboxRow,
    StreamConfigConflict,
    ensure_streams,
    finish_within_grace,
    wait_or_stop,
)
from structlog.typing import FilteringBoundLogger

from . import _metrics as m
from ._acks import AckedPublisher
from ._config import RelaySettings
from ._deadletter import PayloadOverMax, message_bytes
from ._limits import check_max_payload
from ._ports import OutboxSource
from ._settle import Outcome, Settler

_RECONNECT_CHECK_SECONDS = 0.5
#: The nats-server default, for a publisher not told its server's (tests of the loop alone).
DEFAULT_MAX_PAYLOAD = 1024 * 1024


class OutboxPublisher:
    """Relays claimed outbox rows to JetStream until ``stop`` is set."""

    def __init__(
        self,
        source: OutboxSource,
        nc: NATS,
        settings: RelaySettings,
        *,
        connected: Callable[[], bool] = lambda: True,
        log: FilteringBoundLogger | None = None,
        max_payload: Callable[[], int] = lambda: DEFAULT_MAX_PAYLOAD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._js = js = nc.jetstream()
        self._acks = AckedPublisher(nc)
        self._settings = settings
        self._connected = connected
        self._max_payload = max_payload  # the connected server's, which a reconnect may change
        self._log: FilteringBoundLogger = log if log is not None else structlog.get_logger(service=m.SERVICE)
        self._encoder = msgspec.json.Encoder()
        self._running = False
        self._streams_ready = False
        self._api_ok = False
        self._last_progress = time.monotonic()
        self._settler = Settler(
            source, js, settings, max_payload=max_payload, api_failed=self._api_failed, log=self._log, clock=clock
        )

    # -- health --------------------------------------------------------------------------
    def ready(self) -> bool:
        """True while the loop runs, NATS is connected, the API answers and the loop moves."""
        stalled_after = self._settings.wait_ms / 1000 + 60
        return (
            self._running
            and self._streams_ready
            and self._api_ok
            and self._connected()
            and time.monotonic() - self._last_progress < stalled_after
        )

    def details(self) -> dict[str, Any]:
        """The loop state behind ``ready`` for ``/readyz``."""
        return {
            "running": self._running,
            "streams_ready": self._streams_ready,
            "api_ok": self._api_ok,
            "nats_connected": self._connected(),
            "seconds_since_progress": round(time.monotonic() - self._last_progress, 3),
        }

    def _api_failed(self, op: str) -> None:
        self._api_ok = False
        m.API_ERRORS.labels(op).inc()

    # -- loop ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Claim and relay until ``stop``; then finish the batch in hand and return."""
        self._running = True
        backoff = Backoff(self._settings.max_backoff_seconds)
        settling: dict[asyncio.Task[None], int] = {}  # settle task → its row count
        try:
            if not await self._ensure_streams(stop) or not await self._check_limits(stop):
                return
            await self._acks.start()
            while not stop.is_set():
                if not self._connected():
                    # Claiming now would only lease rows we cannot publish. Short checks
                    # (the client reconnects on its own) so the loop resumes promptly.
                    await wait_or_stop(stop, min(_RECONNECT_CHECK_SECONDS, backoff.next()))
                    continue
                marks = self._settler.take_marks()
                try:
                    reply = await finish_within_grace(
                        self._source.outbox_claim(self._settings.batch_size, self._settings.wait_ms, marks),
                        stop,
                        self._settings.shutdown_grace_seconds,
                    )
                except GraceExpired:
                    # Rows the server may have leased to that call are re-offered after the lease.
                    self._log.warning("outbox_claim_abandoned_at_shutdown")
                    self._settler.give_back(marks)
                    break
                except Exception as exc:
                    self._settler.give_back(marks)
                    self._api_failed("claim")
                    delay = backoff.next()
                    self._log.warning("outbox_claim_failed", error=str(exc), retry_in=round(delay, 2))
                    await wait_or_stop(stop, delay)
                    continue
                self._api_ok = True
                self._last_progress = time.monotonic()
                backoff.reset()
                await self._settler.carried(marks, reply.marked)
                if not reply.rows:
                    continue
                m.BATCH_SIZE.observe(len(reply.rows))
                await self._make_room(settling, len(reply.rows))
                sent_at = time.monotonic()
                outcomes = await self._publish(reply.rows)
                task = asyncio.create_task(self._settler.settle(reply.rows, outcomes, sent_at))
                settling[task] = len(reply.rows)
                task.add_done_callback(lambda done: settling.pop(done, None))
        finally:
            await self._await_settled(set(settling), stop)
            await self._settler.finish(stop)
            await self._acks.stop()
            self._running = False

    async def _make_room(self, settling: dict[asyncio.Task[None], int], rows: int) -> None:
        """Wait for earlier settles until ``rows`` more stay within two batch sizes in flight."""
        limit = 2 * self._settings.batch_size
        while settling and sum(settling.values()) + rows > limit:
            await asyncio.wait(set(settling), return_when=asyncio.FIRST_COMPLETED)

    async def _await_settled(self, settling: set[asyncio.Task[None]], stop: asyncio.Event) -> None:
        if not settling:
            return
        try:
            await finish_within_grace(asyncio.gather(*settling), stop, self._settings.shutdown_grace_seconds)
        except GraceExpired:
            # Unmarked rows stay IN_FLIGHT; the server re-offers them after the lease and
            # JetStream drops the copies of those already published.
            self._log.warning("outbox_settle_abandoned_at_shutdown")

    async def _ensure_streams(self, stop: asyncio.Event) -> bool:
        backoff = Backoff(self._settings.max_backoff_seconds)
        while not stop.is_set():
            try:
                await ensure_streams(self._js, self._settings.events_max_age_seconds, log=self._log)
                self._streams_ready = True
                return True
            except StreamConfigConflict:
                raise  # a stream the suite cannot run on: refuse to start (exit 2), never overwrite it
            except Exception as exc:
                delay = backoff.next()
                self._log.warning("streams_ensure_failed", error=str(exc), retry_in=round(delay, 2))
                await wait_or_stop(stop, delay)
        return False

    async def _check_limits(self, stop: asyncio.Event) -> bool:
        """Before the first claim: the control-api's declared NATS max payload (retried while
        it is down) against the server's; a server that takes less raises ConfigError (the
        process refuses to start). False when ``stop`` came first."""
        backoff = Backoff(self._settings.max_backoff_seconds)
        while not stop.is_set():
            try:
                limits = await self._source.limits()
            except Exception as exc:
                self._api_failed("limits")
                delay = backoff.next()
                self._log.warning("limits_unavailable", error=str(exc), retry_in=round(delay, 2))
                await wait_or_stop(stop, delay)
                continue
            self._api_ok = True
            check_max_payload(self._max_payload(), limits)
            self._log.info(
                "nats_max_payload_checked",
                server_max_payload=self._max_payload(),
                api_nats_max_payload=limits.nats_max_payload,
                max_event_bytes=limits.max_event_bytes,
            )
            return True
        return False

    async def _publish(self, rows: list[OutboxRow]) -> list[Outcome]:
        """Send every row without waiting for acks; one ack future (or the send error) per row."""
        outcomes: list[Outcome] = []
        limit = self._max_payload()
        for row in rows:
            try:
                data = self._encoder.encode(row.payload)
                # event ids are unique per execution only (docs/architecture.md#3-identifiers)
                headers = {"Nats-Msg-Id": f"{row.execution_id}:{row.event_id}"}
                size = message_bytes(data, headers)
                if size > limit:
                    # nats-py checks the body alone; over the limit by its headers, the
                    # server would drop the connection instead of refusing one message
                    raise PayloadOverMax(size, limit)
                future = await self._acks.publish(row.subject, data, headers)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(future)
        m.IN_FLIGHT.inc(len(rows))
        return outcomes
