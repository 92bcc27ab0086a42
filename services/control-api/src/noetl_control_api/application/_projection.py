"""The projection: the read model ``noetl.event`` written from the events the projector consumed."""

from __future__ import annotations

from noetl_common import ProjectedEvent, ProjectReply
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import ValidationFailed
from .._metrics import PROJECTED
from ._ids import client_id

MAX_PROJECT = 50_000
#: the first byte of a JSON object, or of null
_OBJECT_OR_NULL = (b"{", b"n")


class ProjectionService:
    """Writes the read model ``noetl.event`` from the events the projector consumed."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def project(self, events: list[ProjectedEvent]) -> ProjectReply:
        if len(events) > MAX_PROJECT:
            raise ValidationFailed(f"at most {MAX_PROJECT} events per call, got {len(events)}")
        for i, event in enumerate(events):
            for name, document in (("context", event.context), ("meta", event.meta)):
                if memoryview(document)[:1] not in _OBJECT_OR_NULL:
                    raise ValidationFailed(f"events[{i}].{name} must be an object or null")
            client_id(event.execution_id, f"events[{i}].execution_id")
            if event.event_id is None:
                raise ValidationFailed(f"events[{i}].event_id is required to project an event")
            client_id(event.event_id, f"events[{i}].event_id")
            if event.parent_execution_id is not None:
                client_id(event.parent_execution_id, f"events[{i}].parent_execution_id")
        async with self._pool.connection() as conn, conn.transaction():
            projected = await store.events.project_events(conn, events)
        PROJECTED.labels("projected").inc(projected)
        PROJECTED.labels("duplicate").inc(len(events) - projected)
        return ProjectReply(projected=projected, duplicates=len(events) - projected)
