"""An in-memory outbox standing in for the control-api's outbox routes (the publisher's ``OutboxSource``).

``tests/contracts`` runs the same cases against this fake and the real control-api.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import msgspec
from noetl_common import (
    LimitsReply,
    MarkDeadReply,
    MarkDeadRequest,
    MarkFailedReply,
    MarkFailedRequest,
    OutboxClaimReply,
    OutboxRow,
)


class MemoryOutbox:
    """Implements ``OutboxSource`` over lists; every change notifies ``changed``."""

    def __init__(self) -> None:
        self.pending: list[OutboxRow] = []
        self.published: set[int] = set()
        self.mark_published_calls: list[list[int]] = []
        self.mark_failed_calls: list[MarkFailedRequest] = []
        self.mark_dead_calls: list[MarkDeadRequest] = []
        self.claim_calls = 0
        self.claim_failures_left = 0
        self.claim_gate: asyncio.Event | None = None
        self.reoffer_failed = False
        self.claimed: dict[int, OutboxRow] = {}
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

    async def outbox_claim(self, limit: int, wait_ms: int) -> OutboxClaimReply:
        self.claim_calls += 1
        await self._notify()
        if self.claim_failures_left > 0:
            self.claim_failures_left -= 1
            raise ConnectionError("control-api unreachable")
        if self.claim_gate is not None:
            await self.claim_gate.wait()
        if not self.pending:
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait_for(lambda: bool(self.pending)), wait_ms / 1000)
                except TimeoutError:
                    return OutboxClaimReply(rows=[], claimed=0)
        rows, self.pending = self.pending[:limit], self.pending[limit:]
        self.claimed.update((row.outbox_id, row) for row in rows)
        return OutboxClaimReply(rows=rows, claimed=len(rows))

    async def outbox_mark_published(self, outbox_ids: list[int]) -> int:
        self.mark_published_calls.append(list(outbox_ids))
        fresh = set(outbox_ids) - self.published
        self.published |= fresh
        await self._notify()
        return len(fresh)

    async def outbox_mark_failed(self, request: MarkFailedRequest) -> MarkFailedReply:
        self.mark_failed_calls.append(request)
        if self.reoffer_failed:  # as if available_at had already passed
            row = self.claimed[request.outbox_id]
            self.pending.append(msgspec.structs.replace(row, attempts=request.attempts))
        await self._notify()
        return MarkFailedReply(marked=1, available_at_in=1.0)

    async def limits(self) -> LimitsReply:
        return self.declared

    async def outbox_mark_dead(self, request: MarkDeadRequest) -> MarkDeadReply:
        self.mark_dead_calls.append(request)
        await self._notify()
        return MarkDeadReply(marked=1, execution_failed=True)
