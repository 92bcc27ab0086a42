"""The publisher's one dependency on the control-api, as a protocol.

``ControlPlaneClient`` satisfies it structurally; tests use an in-memory outbox.
"""

from __future__ import annotations

from typing import Protocol

from noetl_common import MarkFailedReply, MarkFailedRequest, OutboxClaimReply


class OutboxSource(Protocol):
    """Where outbox rows come from and where their fate is recorded."""

    async def outbox_claim(self, limit: int, wait_ms: int) -> OutboxClaimReply:
        """Claim up to ``limit`` rows, long-polling up to ``wait_ms`` when none are ready."""
        ...

    async def outbox_mark_published(self, outbox_ids: list[int]) -> int:
        """Mark rows published (idempotent); returns how many changed."""
        ...

    async def outbox_mark_failed(self, request: MarkFailedRequest) -> MarkFailedReply:
        """Record a failed publish; the row becomes claimable again after a backoff."""
        ...
