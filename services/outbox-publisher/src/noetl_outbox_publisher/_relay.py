"""The relay loop: claim outbox rows → publish to JetStream → mark published/failed.

Shape (ARCHITECTURE §6, STYLE "worker loop"): one loop long-polls ``outbox_claim``;
each batch is sent with ``publish_async`` (pipelined, one ack future per row) carrying
``Nats-Msg-Id: <event_id>``; the batch is then *settled* — acks awaited, its published
rows queued for one ``outbox_mark_published`` call per ``OUTBOX_MARK_INTERVAL_MS`` (or
per batch size of rows), one ``outbox_mark_failed`` per failed row — in a task that
overlaps the next claims. At most two batch sizes of rows are in
flight: a batch that would exceed that waits for earlier settles first. A small batch
never waits for the previous one's mark-published, so a row committed meanwhile is
claimed and published at once (commit → ack latency at low rates).

Delivery is at-least-once: a row whose ack or mark-published is lost stays IN_FLIGHT,
is reclaimed after the server's lease and published again; JetStream drops the copy
by its Msg-Id within the duplicate window. A row that cannot be published — too large
for the server, or failed ``PUBLISHER_MAX_ATTEMPTS`` times — is copied to ``NOETL_DLQ``
and marked dead (:mod:`._deadletter`), never retried forever.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
import structlog
from nats.js import JetStreamContext
from nats.js.api import PubAck
from noetl_common import (
    Backoff,
    GraceExpired,
    MarkDeadRequest,
    MarkFailedRequest,
    OutboxRow,
    ensure_streams,
    finish_within_grace,
    wait_or_stop,
)

from . import _metrics as m
from ._config import RelaySettings
from ._deadletter import PayloadOverMax, dead_letter_message, is_permanent, message_bytes
from ._limits import check_max_payload
from ._ports import OutboxSource

_MARK_FAILED_CONCURRENCY = 16
_RECONNECT_CHECK_SECONDS = 0.5
#: The nats-server default, for a publisher not told its server's (tests of the loop alone).
DEFAULT_MAX_PAYLOAD = 1024 * 1024

Outcome = asyncio.Future[PubAck] | BaseException


def _age_seconds(payload: dict[str, Any], now: float) -> float | None:
    """Seconds since the payload's ``created_at`` (events carry it; commands do not)."""
    raw = payload.get("created_at")
    if not isinstance(raw, str):
        return None
    try:
        return max(0.0, now - datetime.fromisoformat(raw).timestamp())
    except ValueError:
        return None


class OutboxPublisher:
    """Relays claimed outbox rows to JetStream until ``stop`` is set."""

    def __init__(
        self,
        source: OutboxSource,
        js: JetStreamContext,
        settings: RelaySettings,
        *,
        connected: Callable[[], bool] = lambda: True,
        log: Any = None,
        max_payload: Callable[[], int] = lambda: DEFAULT_MAX_PAYLOAD,
    ) -> None:
        self._source = source
        self._js = js
        self._settings = settings
        self._connected = connected
        self._max_payload = max_payload  # the connected server's, which a reconnect may change
        self._log = log if log is not None else structlog.get_logger(service=m.SERVICE)
        self._encoder = msgspec.json.Encoder()
        self._running = False
        self._streams_ready = False
        self._api_ok = False
        self._last_progress = time.monotonic()
        self._unmarked: list[int] = []  # published and acked, not yet marked
        self._marker: asyncio.Task[None] | None = None  # waiting for the interval to pass
        self._marking: set[asyncio.Task[None]] = set()

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

    # -- loop ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Claim and relay until ``stop``; then finish the batch in hand and return."""
        self._running = True
        backoff = Backoff(self._settings.max_backoff_seconds)
        settling: dict[asyncio.Task[None], int] = {}  # settle task → its row count
        try:
            if not await self._ensure_streams(stop) or not await self._check_limits(stop):
                return
            while not stop.is_set():
                if not self._connected():
                    # Claiming now would only lease rows we cannot publish. Short checks
                    # (the client reconnects on its own) so the loop resumes promptly.
                    await wait_or_stop(stop, min(_RECONNECT_CHECK_SECONDS, backoff.next()))
                    continue
                try:
                    reply = await finish_within_grace(
                        self._source.outbox_claim(self._settings.batch_size, self._settings.wait_ms),
                        stop,
                        self._settings.shutdown_grace_seconds,
                    )
                except GraceExpired:
                    # Rows the server may have leased to that call are re-offered after the lease.
                    self._log.warning("outbox_claim_abandoned_at_shutdown")
                    break
                except Exception as exc:
                    self._api_ok = False
                    m.API_ERRORS.labels("claim").inc()
                    delay = backoff.next()
                    self._log.warning("outbox_claim_failed", error=str(exc), retry_in=round(delay, 2))
                    await wait_or_stop(stop, delay)
                    continue
                self._api_ok = True
                self._last_progress = time.monotonic()
                backoff.reset()
                if not reply.rows:
                    continue
                m.BATCH_SIZE.observe(len(reply.rows))
                await self._make_room(settling, len(reply.rows))
                sent_at = time.monotonic()
                outcomes = await self._publish(reply.rows)
                task = asyncio.create_task(self._settle(reply.rows, outcomes, sent_at))
                settling[task] = len(reply.rows)
                task.add_done_callback(lambda done: settling.pop(done, None))
        finally:
            await self._await_settled(set(settling), stop)
            await self._mark_rest(stop)
            self._running = False

    async def _make_room(self, settling: dict[asyncio.Task[None], int], rows: int) -> None:
        """Wait for earlier settles until ``rows`` more stay within two batch sizes in flight
        (inside nats-py's pending window of 4000 with OUTBOX_BATCH_SIZE ≤ 2000)."""
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
                await ensure_streams(self._js, self._settings.events_max_age_seconds)
                self._streams_ready = True
                return True
            except Exception as exc:
                delay = backoff.next()
                self._log.warning("ensure_streams_failed", error=str(exc), retry_in=round(delay, 2))
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
                self._api_ok = False
                m.API_ERRORS.labels("limits").inc()
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
                headers = {"Nats-Msg-Id": str(row.event_id)}
                size = message_bytes(data, headers)
                if size > limit:
                    # nats-py checks the body alone; over the limit by its headers, the
                    # server would drop the connection instead of refusing one message
                    raise PayloadOverMax(size, limit)
                future = await self._js.publish_async(row.subject, data, headers=headers)
            except Exception as exc:
                outcomes.append(exc)
            else:
                outcomes.append(future)
        m.IN_FLIGHT.inc(len(rows))
        return outcomes

    async def _settle(self, rows: list[OutboxRow], outcomes: list[Outcome], sent_at: float) -> None:
        """Await the acks, then record the batch's fate with the control-api. Never raises."""
        try:
            futures = [o for o in outcomes if isinstance(o, asyncio.Future)]
            if futures:
                deadline = sent_at + self._settings.ack_timeout_seconds
                _, pending = await asyncio.wait(futures, timeout=max(0.0, deadline - time.monotonic()))
                for future in pending:
                    future.cancel()
            m.PUBLISH_TO_ACK.observe(time.monotonic() - sent_at)
            now = time.time()
            published: list[int] = []
            failed: list[tuple[OutboxRow, str, bool]] = []
            for row, outcome in zip(rows, outcomes, strict=True):
                error = _error_of(outcome)
                if error is not None:
                    failed.append((row, error, is_permanent(_exception_of(outcome))))
                    continue
                assert isinstance(outcome, asyncio.Future)
                if outcome.result().duplicate:
                    m.DUPLICATES.inc()
                age = _age_seconds(row.payload, now)
                if age is not None:
                    m.COMMIT_TO_ACK.observe(age)
                published.append(row.outbox_id)
            if published:
                await self._queue_marks(published)
            if failed:
                await self._mark_failed(failed)
        except Exception:
            self._log.exception("outbox_settle_failed", rows=len(rows))
        finally:
            m.IN_FLIGHT.dec(len(rows))

    async def _queue_marks(self, outbox_ids: list[int]) -> None:
        """Mark published rows in one call per ``mark_interval_seconds`` (or per batch size of
        rows): a trickle of small batches (one execution's steps) otherwise costs a request
        and a transaction each. A row stays IN_FLIGHT that much longer; if the publisher dies
        meanwhile, the server re-offers it after the lease and JetStream drops the copy."""
        self._unmarked += outbox_ids
        if len(self._unmarked) >= self._settings.batch_size or self._settings.mark_interval_seconds <= 0:
            await self._flush_marks()
        elif self._marker is None:
            self._marker = asyncio.create_task(self._mark_later())
            self._marking.add(self._marker)
            self._marker.add_done_callback(self._marking.discard)

    async def _mark_later(self) -> None:
        await asyncio.sleep(self._settings.mark_interval_seconds)  # the only await a stop cancels
        self._marker = None
        await self._flush_marks()

    async def _flush_marks(self) -> None:
        outbox_ids, self._unmarked = self._unmarked, []
        if outbox_ids:
            await self._mark_published(outbox_ids)

    async def _mark_rest(self, stop: asyncio.Event) -> None:
        """At the end: the marks still waiting go out now (within the shutdown grace)."""
        if self._marker is not None:
            self._marker.cancel()  # still waiting for its interval: its rows are marked here
            self._marker = None

        async def rest() -> None:
            await asyncio.gather(*self._marking, return_exceptions=True)  # marks under way
            await self._flush_marks()

        try:
            await finish_within_grace(rest(), stop, self._settings.shutdown_grace_seconds)
        except GraceExpired:
            self._log.warning("outbox_marks_abandoned_at_shutdown", rows=len(self._unmarked))

    async def _mark_published(self, outbox_ids: list[int]) -> None:
        try:
            await self._source.outbox_mark_published(outbox_ids)
        except Exception as exc:
            # The rows stay IN_FLIGHT; the server re-offers them after the lease and
            # JetStream drops the re-publish by Msg-Id.
            self._api_ok = False
            m.API_ERRORS.labels("mark_published").inc()
            self._log.warning("outbox_mark_published_failed", rows=len(outbox_ids), error=str(exc))
            return
        m.ROWS_PUBLISHED.inc(len(outbox_ids))

    async def _mark_failed(self, failed: list[tuple[OutboxRow, str, bool]]) -> None:
        m.PUBLISH_FAILURES.inc(len(failed))
        gate = asyncio.Semaphore(_MARK_FAILED_CONCURRENCY)

        async def one(row: OutboxRow, error: str, permanent: bool) -> None:
            async with gate:
                self._log.warning(
                    "outbox_publish_failed",
                    outbox_id=row.outbox_id,
                    event_id=row.event_id,
                    execution_id=row.execution_id,
                    subject=row.subject,
                    attempts=row.attempts + 1,
                    permanent=permanent,
                    error=error,
                )
                if (permanent or row.attempts + 1 >= self._settings.max_attempts) and await self._dead_letter(
                    row, error
                ):
                    return
                try:
                    await self._source.outbox_mark_failed(
                        MarkFailedRequest(
                            outbox_id=row.outbox_id,
                            error=error[:1000],
                            attempts=row.attempts + 1,
                            max_delay_seconds=self._settings.max_retry_delay_seconds,
                        )
                    )
                except Exception as exc:
                    self._api_ok = False
                    m.API_ERRORS.labels("mark_failed").inc()
                    self._log.warning("outbox_mark_failed_failed", outbox_id=row.outbox_id, error=str(exc))

        await asyncio.gather(*(one(row, error, permanent) for row, error, permanent in failed))

    async def _dead_letter(self, row: OutboxRow, error: str) -> bool:
        """Copy the row to NOETL_DLQ, then mark it dead; False when the copy could not be
        published (the row is then marked failed and comes back, to be dead-lettered later)."""
        subject, data, headers = dead_letter_message(
            row, self._encoder.encode(row.payload), error, self._max_payload()
        )
        try:
            await self._js.publish(subject, data, headers=headers, timeout=self._settings.ack_timeout_seconds)
        except Exception as exc:
            self._log.warning("outbox_dead_letter_failed", outbox_id=row.outbox_id, error=repr(exc))
            return False
        try:
            reply = await self._source.outbox_mark_dead(
                MarkDeadRequest(outbox_id=row.outbox_id, error=error[:1000])
            )
        except Exception as exc:
            # The row stays IN_FLIGHT: re-offered after the lease, it fails again and its
            # second copy is dropped by its Msg-Id.
            self._api_ok = False
            m.API_ERRORS.labels("mark_dead").inc()
            self._log.warning("outbox_mark_dead_failed", outbox_id=row.outbox_id, error=str(exc))
            return True
        m.DEAD_LETTERED.inc()
        self._log.error(
            "outbox_row_dead_lettered",
            outbox_id=row.outbox_id,
            event_id=row.event_id,
            execution_id=row.execution_id,
            subject=row.subject,
            dlq_subject=subject,
            execution_failed=reply.execution_failed,
            error=error,
        )
        return True


def _exception_of(outcome: Outcome) -> BaseException | None:
    if isinstance(outcome, BaseException):
        return outcome
    if outcome.cancelled():
        return None
    return outcome.exception()


def _error_of(outcome: Outcome) -> str | None:
    """The failure of one row's publish, or None when JetStream acked it."""
    if isinstance(outcome, BaseException):
        return f"{type(outcome).__name__}: {outcome}"
    if outcome.cancelled():
        return "ack timeout"
    exc = outcome.exception()
    if exc is not None:
        return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return None
