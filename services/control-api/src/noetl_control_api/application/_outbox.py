"""The outbox relay's use cases: claim rows (long-polling), mark them, dead-letter, purge."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import msgspec
from noetl_common import (
    LimitsReply,
    MarkDeadReply,
    MarkFailedReply,
    OutboxClaimReply,
    outbox_delay_seconds,
)
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import NotFound, ValidationFailed
from .._metrics import OUTBOX_CLAIMED, OUTBOX_PENDING, OUTBOX_WAITERS
from .._options import RetentionPolicy
from ..store import OutboxNotifier
from ._executions import ExecutionService
from ._ids import client_id
from ._views import PurgeReply, PurgeRequest

MAX_CLAIM = 10_000
MAX_WAIT_MS = 120_000
#: ``cause`` of the failure of an execution one of whose outbox rows could not be published.
OUTBOX_DEAD = "outbox_dead_letter"
# when the listener is down, re-check this often instead of trusting a wake-up that may not come
_FALLBACK_POLL_SECONDS = 1.0


class OutboxService:
    """Claims outbox rows for publishers, long-polling on LISTEN/NOTIFY when there are none."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        notifier: OutboxNotifier,
        executions: ExecutionService,
        *,
        lease_seconds: float,
        limits: LimitsReply,
        retention: RetentionPolicy | None = None,
    ) -> None:
        self._pool = pool
        self._retention = retention or RetentionPolicy()
        self._notifier = notifier
        self._executions = executions
        self._lease = lease_seconds
        self._limits = limits
        self.waiting = 0
        self._closing = False
        #: the wake event taken before the last claim query that found fewer rows than it asked
        #: for: while no notification has set it, no row was inserted since (every insert
        #: notifies in its transaction), so a long-poll may wait before it looks again
        self._drained: asyncio.Event | None = None
        #: claim queries skipped that way (observable by tests and the bench)
        self.skipped_queries = 0
        #: notified whenever a claim parks to wait; lets callers observe parked pollers
        self.parked = asyncio.Condition()

    async def claim(self, limit: int, wait_ms: int, published: Sequence[int] = ()) -> OutboxClaimReply:
        """Mark ``published`` rows published, then claim up to ``limit`` rows; with none ready,
        wait up to ``wait_ms`` for an insert.

        The marks are the publisher's since an earlier claim: carried here, a steady flow
        needs no mark-published request and transaction of their own. They commit with this
        call's claim query: the first one, or, when the first is skipped (nothing was
        inserted since the last claim drained the table), the one after the wake-up or at the
        end of the wait; a claim cut short by shutdown marks them alone."""
        if not 1 <= limit <= MAX_CLAIM:
            raise ValidationFailed(f"limit must be within 1..{MAX_CLAIM}, got {limit}")
        if not 0 <= wait_ms <= MAX_WAIT_MS:
            raise ValidationFailed(f"wait_ms must be within 0..{MAX_WAIT_MS}, got {wait_ms}")
        marks = self._mark_ids(published, "published[]")
        marked: int = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_ms / 1000
        first = True
        while True:
            # taken before the query: a NOTIFY after it (even before we wait) still wakes us
            wake = self._notifier.current()
            if first and wait_ms > 0 and self._nothing_new(wake):
                # The previous claim took every row there was and nothing was inserted since: a
                # publisher's claim right after a batch would only find the table empty. Wait
                # first, then look (rows due later or leases expiring are found then, within
                # the long-poll, as a claim already waiting would find them).
                self.skipped_queries += 1
                rows = []
            else:
                async with self._pool.connection() as conn, conn.transaction():
                    if marks:
                        marked, marks = await store.outbox.mark_published(conn, marks), []
                    rows = await store.outbox.claim_outbox(conn, limit, self._lease)
                self._drained = wake if len(rows) < limit else None
            first = False
            remaining = deadline - loop.time()
            if rows or remaining <= 0 or self._closing:
                OUTBOX_CLAIMED.inc(len(rows))
                return OutboxClaimReply(rows=rows, claimed=len(rows), marked=marked + await self._mark_alone(marks))
            timeout = remaining if self._notifier.connected else min(remaining, _FALLBACK_POLL_SECONDS)
            await self._park(wake, timeout)
            if self._closing:
                return OutboxClaimReply(rows=[], claimed=0, marked=marked + await self._mark_alone(marks))

    async def _mark_alone(self, outbox_ids: list[int]) -> int:
        """Marks no claim query carried (a claim cut short by shutdown)."""
        if not outbox_ids:
            return 0
        async with self._pool.connection() as conn, conn.transaction():
            return await store.outbox.mark_published(conn, outbox_ids)

    @staticmethod
    def _mark_ids(outbox_ids: Sequence[int], field: str) -> list[int]:
        ids = [client_id(v, field) for v in outbox_ids]
        if len(ids) > MAX_CLAIM:
            raise ValidationFailed(f"at most {MAX_CLAIM} {field.rstrip('[]')} per call, got {len(ids)}")
        return ids

    def _nothing_new(self, wake: asyncio.Event) -> bool:
        """No row became claimable since the last query that drained the table (as far as
        this process can tell: a notification sets ``wake``, a reconnect of the listener too)."""
        return self._drained is wake and not wake.is_set() and self._notifier.connected

    def close(self) -> None:
        """Stop long-polls: parked claims return at once (empty) so shutdown need not wait."""
        self._closing = True
        self._notifier.wake()

    async def _park(self, wake: asyncio.Event, timeout: float) -> None:
        self.waiting += 1
        OUTBOX_WAITERS.inc()
        async with self.parked:
            self.parked.notify_all()
        try:
            await asyncio.wait_for(wake.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            self.waiting -= 1
            OUTBOX_WAITERS.dec()

    async def mark_published(self, outbox_ids: list[int]) -> int:
        ids = self._mark_ids(outbox_ids, "outbox_ids[]")
        async with self._pool.connection() as conn, conn.transaction():
            return await store.outbox.mark_published(conn, ids)

    async def mark_failed(
        self, outbox_id: int, error: str, attempts: int, max_delay_seconds: float
    ) -> MarkFailedReply:
        client_id(outbox_id, "outbox_id")
        if not 0 <= attempts < 2**31:
            raise ValidationFailed(f"attempts must be within 0..{2**31 - 1}, got {attempts}")
        if not 0 <= max_delay_seconds <= 86_400:
            raise ValidationFailed(f"max_delay_seconds must be within 0..86400, got {max_delay_seconds}")
        delay = outbox_delay_seconds(attempts, max_delay_seconds)
        async with self._pool.connection() as conn, conn.transaction():
            marked = await store.outbox.mark_failed(conn, outbox_id, error, attempts, delay)
        self._drained = None  # the row is claimable again without a notification: look next time
        return MarkFailedReply(marked=marked, available_at_in=delay)

    async def mark_dead(self, outbox_id: int, error: str) -> MarkDeadReply:
        """A row the publisher can never publish (too large for NATS, or out of attempts): it
        becomes FAILED and its execution, if still running, fails naming the row and the error,
        in one transaction. Repeating the call changes nothing."""
        client_id(outbox_id, "outbox_id")
        if not error.strip():
            raise ValidationFailed("error must not be empty", {"field": "error"})
        async with self._pool.connection() as conn, conn.transaction():
            row = await store.outbox.dead_row(conn, outbox_id)
            if row is None:
                raise NotFound(f"outbox row {outbox_id} not found")
            # the execution first, then the row: the lock order of every writer
            await store.executions.lock(conn, [row.execution_id], "UPDATE", state="none")
            marked = await store.outbox.mark_dead(conn, outbox_id, error)
            failed = False
            if marked:
                what = f"{row.event_type or 'message'} {row.event_id}"
                where = f" of step {row.step!r}" if row.step else ""
                failed = await self._executions.fail_locked(
                    conn,
                    row.execution_id,
                    f"{what}{where} could not be published to {row.subject}: {error}",
                    cause=OUTBOX_DEAD,
                )
        return MarkDeadReply(marked=marked, execution_failed=failed)

    def limits(self) -> LimitsReply:
        """The NATS max payload this control-api was configured for and its largest event."""
        return self._limits

    async def purge(self, request: PurgeRequest) -> PurgeReply:
        """Retention: published outbox rows, then old terminal executions and events, ``limit`` each."""
        if request.policy:
            request = msgspec.structs.replace(
                request,
                outbox_published_older_than_seconds=self._retention.outbox_seconds,
                executions_older_than_seconds=self._retention.executions_seconds,
                events_older_than_seconds=self._retention.events_seconds,
            )
        ages = {
            "outbox_published_older_than_seconds": request.outbox_published_older_than_seconds,
            "executions_older_than_seconds": request.executions_older_than_seconds,
            "events_older_than_seconds": request.events_older_than_seconds,
        }
        for name, age in ages.items():
            if age is not None and not 0 <= age <= 10 * 365 * 86_400:
                raise ValidationFailed(f"{name} out of range: {age}")
            floor = self._retention.floor(name)
            if age is not None and age < floor:
                # nobody widens a sweep past the policy: not an admin's call, not a payload's
                raise ValidationFailed(
                    f"{name}={age:g} is shorter than the retention policy ({floor:g} s,"
                    f" {self._retention.variable(name)})",
                    {"field": name},
                )
        limit = request.limit
        if not 1 <= limit <= 1_000_000:
            raise ValidationFailed(f"limit must be within 1..1000000, got {limit}")
        purged = store.retention.Purged()
        events = 0
        async with self._pool.connection() as conn, conn.transaction():
            deleted = await store.outbox.purge_published(
                conn, request.outbox_published_older_than_seconds, limit
            )
            if request.executions_older_than_seconds is not None:
                purged = await store.retention.purge_executions(
                    conn, request.executions_older_than_seconds, limit
                )
            if request.events_older_than_seconds is not None:
                events = await store.retention.purge_events(conn, request.events_older_than_seconds, limit)
        return PurgeReply(
            outbox_deleted=deleted + purged.outbox,
            executions_deleted=purged.executions,
            events_deleted=purged.events + events,
            commands_deleted=purged.commands,
            results_deleted=purged.results,
            keychain_deleted=purged.keychain,
            objects_deleted=purged.objects,
            step_logs_deleted=purged.step_logs,
        )

    async def pending_count(self) -> int:
        async with self._pool.connection() as conn:
            pending = await store.outbox.pending_count(conn)
        OUTBOX_PENDING.set(pending)
        return pending
