"""Settling a published batch: its acks awaited, then its fate recorded with the control-api.

Published rows are marked once per ``OUTBOX_MARK_INTERVAL_MS`` (or per batch size of rows),
in one statement: the first claim the relay sends after the interval carries them
(``published``, marked in the claim's transaction), and when none goes out within a second
interval (the loop is parked in a long-poll) one ``outbox_mark_published`` call marks them.
A failed row is marked failed
with ``attempts + 1``, or, when it can never be published, copied to ``NOETL_DLQ`` and
marked dead (:mod:`._deadletter`). A mark that is lost leaves its row IN_FLIGHT: the
server re-offers it after the lease and JetStream drops the re-publish by its Msg-Id.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec
from nats.js import JetStreamContext
from noetl_common import GraceExpired, MarkDeadRequest, MarkFailedRequest, OutboxRow, finish_within_grace
from structlog.typing import FilteringBoundLogger

from . import _metrics as m
from ._acks import Ack
from ._config import RelaySettings
from ._deadletter import dead_letter_message, is_permanent
from ._ports import OutboxSource

_MARK_FAILED_CONCURRENCY = 16

#: One row's publish: its ack future, or the error that kept it from being sent.
Outcome = asyncio.Future[Ack] | BaseException


class Settler:
    """Awaits the acks of published batches and records each row's fate through ``source``.

    ``api_failed(op)`` is told of every control-api call that failed (the loop's health).
    """

    def __init__(
        self,
        source: OutboxSource,
        js: JetStreamContext,
        settings: RelaySettings,
        *,
        max_payload: Callable[[], int],
        api_failed: Callable[[str], None],
        log: FilteringBoundLogger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._js = js
        self._settings = settings
        self._max_payload = max_payload
        self._api_failed = api_failed
        self._log = log
        self._encoder = msgspec.json.Encoder()
        self._unmarked: list[int] = []  # published and acked, not yet marked
        self._clock = clock  # when marks are due for a claim (tests turn it)
        self._marks_due = 0.0  # when a claim takes the unmarked rows (``clock``)
        self._marker: asyncio.Task[None] | None = None  # waiting for the interval to pass
        self._marking: set[asyncio.Task[None]] = set()

    async def settle(self, rows: list[OutboxRow], outcomes: list[Outcome], sent_at: float) -> None:
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

    def take_marks(self) -> list[int]:
        """For the claim about to go out: the published rows not yet marked, once the first of
        them waited ``mark_interval_seconds`` (or a batch size of rows waits); else none (one
        statement per interval, not one per claim)."""
        if not self._unmarked or (
            len(self._unmarked) < self._settings.batch_size and self._clock() < self._marks_due
        ):
            return []
        if self._marker is not None:
            self._marker.cancel()  # the claim marks its rows
            self._marker = None
        taken, self._unmarked = self._unmarked, []
        return taken

    def give_back(self, outbox_ids: list[int]) -> None:
        """Rows a claim carried that may not have been marked (the claim failed): due for the
        next claim or call (marking again changes nothing)."""
        if outbox_ids:
            self._unmarked = outbox_ids + self._unmarked
            self._marks_due = self._clock()
            self._start_interval()

    async def carried(self, outbox_ids: list[int], marked: int | msgspec.UnsetType) -> None:
        """A claim that carried ``outbox_ids`` was answered; ``marked`` is UNSET from a
        control-api that does not mark on claim, which is then asked with a call of its own."""
        if not outbox_ids:
            return
        if marked is msgspec.UNSET:
            await self._mark_published(outbox_ids)
        else:
            m.ROWS_PUBLISHED.inc(len(outbox_ids))

    async def _queue_marks(self, outbox_ids: list[int]) -> None:
        """Keep published rows for the first claim after ``mark_interval_seconds``, or mark them
        in one call when no claim took them within a second interval (or at once when a batch
        size of rows waits): a trickle of small batches (one execution's steps) otherwise
        costs a statement (or a request and a transaction) each. A row stays IN_FLIGHT that much longer; if the publisher dies meanwhile, the
        server re-offers it after the lease and JetStream drops the copy."""
        if not self._unmarked:
            self._marks_due = self._clock() + self._settings.mark_interval_seconds
        self._unmarked += outbox_ids
        if len(self._unmarked) >= self._settings.batch_size or self._settings.mark_interval_seconds <= 0:
            await self._flush_marks()
        else:
            self._start_interval()

    def _start_interval(self) -> None:
        if self._marker is None:
            self._marker = asyncio.create_task(self._mark_later())
            self._marking.add(self._marker)
            self._marker.add_done_callback(self._marking.discard)

    async def _mark_later(self) -> None:
        # a claim takes the rows after one interval; this call, after a second one without a claim
        await asyncio.sleep(2 * self._settings.mark_interval_seconds)  # the only await a stop cancels
        self._marker = None
        await self._flush_marks()

    async def _flush_marks(self) -> None:
        outbox_ids, self._unmarked = self._unmarked, []
        if outbox_ids:
            await self._mark_published(outbox_ids)

    async def finish(self, stop: asyncio.Event) -> None:
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
            self._api_failed("mark_published")
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
                    self._api_failed("mark_failed")
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
            self._api_failed("mark_dead")
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


class _Stamp(msgspec.Struct):
    """The one field of a payload the publisher reads (the rest is skipped, not built)."""

    created_at: Any = None


_STAMP = msgspec.json.Decoder(_Stamp)


def _age_seconds(payload: dict[str, Any] | msgspec.Raw, now: float) -> float | None:
    """Seconds since the payload's ``created_at`` (events carry it; commands do not)."""
    if isinstance(payload, msgspec.Raw):
        try:
            raw = _STAMP.decode(payload).created_at
        except msgspec.DecodeError:
            return None
    else:
        raw = payload.get("created_at")
    if not isinstance(raw, str):
        return None
    try:
        return max(0.0, now - datetime.fromisoformat(raw).timestamp())
    except ValueError:
        return None
