"""An in-memory outbox standing in for the control-api's outbox routes (the publisher's ``OutboxSource``).

As the real outbox: a claimed row is not offered again unless re-offered (``add``, as after
an expired lease); marking published counts only rows that changed; a failed row comes back
once its backoff passed (at once when it is zero; the fake has no clock for the rest); a dead
row is never offered again and fails its execution, once. ``tests/contracts`` runs the same
cases against this fake and the real control-api.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import msgspec
from noetl_common import (
    ApiError,
    ErrorBody,
    LimitsReply,
    MarkDeadReply,
    MarkDeadRequest,
    MarkFailedReply,
    MarkFailedRequest,
    OutboxClaimReply,
    OutboxRow,
    outbox_delay_seconds,
)


class MemoryOutbox:
    """Implements ``OutboxSource`` over lists; every change notifies ``changed``."""

    def __init__(self) -> None:
        self.pending: list[OutboxRow] = []
        self.published: set[int] = set()
        self.mark_published_calls: list[list[int]] = []
        #: the ``published`` ids each claim carried (an empty list when it carried none)
        self.claim_marks: list[list[int]] = []
        #: answer as a control-api that does not mark on claim (no ``marked`` in the reply)
        self.marks_on_claim = True
        self.mark_failed_calls: list[MarkFailedRequest] = []
        self.mark_dead_calls: list[MarkDeadRequest] = []
        self.claim_calls = 0
        self.claim_failures_left = 0
        self.claim_gate: asyncio.Event | None = None
        self.reoffer_failed = False
        self.claimed: dict[int, OutboxRow] = {}
        self.dead: set[int] = set()
        self.failed_executions: set[int] = set()
        self.changed = asyncio.Condition()
        #: what the control-api declares: the nats-server default, as the publisher assumes
        self.declared = LimitsReply(nats_max_payload=1024 * 1024, max_event_bytes=1024 * 1024 - 8192)

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def add(self, *rows: OutboxRow) -> None:
        """Commit rows to the outbox (or re-offer them, as after an expired lease)."""
        self.pending.extend(rows)
        await self._notify()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

    async def outbox_claim(self, limit: int, wait_ms: int, published: Sequence[int] = ()) -> OutboxClaimReply:
        self.claim_calls += 1
        self.claim_marks.append(list(published))
        await self._notify()
        if self.claim_failures_left > 0:
            self.claim_failures_left -= 1
            raise ConnectionError("control-api unreachable")
        marked: int | msgspec.UnsetType = msgspec.UNSET
        if self.marks_on_claim:
            marked = self._mark(published)
            await self._notify()
        if self.claim_gate is not None:
            await self.claim_gate.wait()
        if not self.pending:
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait_for(lambda: bool(self.pending)), wait_ms / 1000)
                except TimeoutError:
                    return OutboxClaimReply(rows=[], claimed=0, marked=marked)
        rows, self.pending = self.pending[:limit], self.pending[limit:]
        self.claimed.update((row.outbox_id, row) for row in rows)
        return OutboxClaimReply(rows=rows, claimed=len(rows), marked=marked)

    def _mark(self, outbox_ids: Sequence[int]) -> int:
        fresh = (set(outbox_ids) & self._known()) - self.published
        self.published |= fresh
        return len(fresh)

    async def outbox_mark_published(self, outbox_ids: list[int]) -> int:
        self.mark_published_calls.append(list(outbox_ids))
        marked = self._mark(outbox_ids)
        await self._notify()
        return marked

    async def outbox_mark_failed(self, request: MarkFailedRequest) -> MarkFailedReply:
        self.mark_failed_calls.append(request)
        delay = outbox_delay_seconds(request.attempts, request.max_delay_seconds)
        row = self.claimed.get(request.outbox_id)
        marked = row is not None and request.outbox_id not in self.published | self.dead
        if row is not None and marked and (self.reoffer_failed or delay == 0):
            # reoffer_failed: as if available_at had already passed
            self.pending.append(msgspec.structs.replace(row, attempts=max(row.attempts, request.attempts)))
        await self._notify()
        return MarkFailedReply(marked=int(marked), available_at_in=delay)

    async def limits(self) -> LimitsReply:
        return self.declared

    async def outbox_mark_dead(self, request: MarkDeadRequest) -> MarkDeadReply:
        self.mark_dead_calls.append(request)
        try:
            row = self._row(request.outbox_id)
            if row is None:
                detail = f"outbox row {request.outbox_id} not found"
                raise ApiError(404, ErrorBody(status_code=404, error="not_found", detail=detail), "", None)
            if request.outbox_id in self.published | self.dead:
                return MarkDeadReply(marked=0, execution_failed=False)
            self.dead.add(request.outbox_id)
            self.pending = [r for r in self.pending if r.outbox_id != request.outbox_id]
            failed = row.execution_id not in self.failed_executions
            self.failed_executions.add(row.execution_id)
            return MarkDeadReply(marked=1, execution_failed=failed)
        finally:
            await self._notify()

    def _known(self) -> set[int]:
        """Ids of the rows committed to the outbox (offered or still to be)."""
        return set(self.claimed) | {row.outbox_id for row in self.pending}

    def _row(self, outbox_id: int) -> OutboxRow | None:
        return self.claimed.get(outbox_id) or next(
            (r for r in self.pending if r.outbox_id == outbox_id), None
        )
