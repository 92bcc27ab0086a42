"""The publisher's dependency on the control-api's outbox routes, as a protocol.

``ControlPlaneClient`` satisfies it structurally; tests use an in-memory outbox.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from noetl_common import (
    LimitsReply,
    MarkDeadReply,
    MarkDeadRequest,
    MarkFailedReply,
    MarkFailedRequest,
    OutboxClaimReply,
)


class OutboxSource(Protocol):
    """Where outbox rows come from and where their fate is recorded."""

    async def outbox_claim(self, limit: int, wait_ms: int, published: Sequence[int] = ()) -> OutboxClaimReply:
        """Mark ``published`` rows published (as ``outbox_mark_published``; ``marked`` in the
        reply), then claim up to ``limit`` rows, long-polling up to ``wait_ms`` when none are ready."""
        ...

    async def outbox_mark_published(self, outbox_ids: list[int]) -> int:
        """Mark rows published (idempotent); returns how many changed."""
        ...

    async def outbox_mark_failed(self, request: MarkFailedRequest) -> MarkFailedReply:
        """Record a failed publish; the row becomes claimable again after a backoff."""
        ...

    async def outbox_mark_dead(self, request: MarkDeadRequest) -> MarkDeadReply:
        """A row that will never be published: FAILED, and its execution failed with the cause."""
        ...

    async def limits(self) -> LimitsReply:
        """The NATS max payload the control-api writes events for."""
        ...
