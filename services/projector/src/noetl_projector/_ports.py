"""The projector's one dependency on the control-api, as a protocol.

``ControlPlaneClient`` satisfies it structurally; tests use an in-memory sink.
"""

from __future__ import annotations

from typing import Protocol

from noetl_common import Event, LimitsReply, ProjectReply


class EventSink(Protocol):
    """Where decoded events go: one set-based, idempotent insert per call."""

    async def project_events(self, events: list[Event]) -> ProjectReply:
        """Project ``events`` (duplicates by (execution_id, event_id) are ignored); raise on any non-2xx."""
        ...

    async def limits(self) -> LimitsReply:
        """What the control-api declares, ``event_shard_count`` among it (checked at start)."""
        ...
