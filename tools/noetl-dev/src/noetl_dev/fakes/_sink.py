"""An in-memory event sink standing in for the control-api's project route (the projector's ``EventSink``).

As the real route: events are kept once per (execution id, event id), a batch is kept whole or not at all,
and an event without an id is refused (400). ``tests/contracts`` runs the same cases against
this fake and the real control-api.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from noetl_common import ApiError, ErrorBody, Event, LimitsReply, ProjectReply


class MemorySink:
    """Implements ``EventSink``; records every call, can block, fail or reject events."""

    def __init__(self) -> None:
        self.calls: list[list[Event]] = []
        self.projected: dict[tuple[int, int], Event] = {}
        self.fail_next = 0
        self.always_fail = False
        self.reject: Callable[[Event], bool] = lambda _event: False
        self.gate: asyncio.Event | None = None
        self.entered = 0
        self.changed = asyncio.Condition()
        #: what ``limits`` declares: the control-api's event shard count (its default, 1)
        self.declared = LimitsReply(
            nats_max_payload=1024 * 1024, max_event_bytes=1024 * 1024 - 8192, event_shard_count=1
        )
        #: the next ``limits`` calls that fail as an unreachable API would (503)
        self.limits_failures_left = 0

    def event_ids(self) -> set[int]:
        """The event ids projected (of every execution)."""
        return {event_id for _, event_id in self.projected}

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

    async def limits(self) -> LimitsReply:
        """``GET /api/internal/limits`` as the projector calls it at start."""
        try:
            if self.limits_failures_left > 0:
                self.limits_failures_left -= 1
                raise ApiError(503, ErrorBody(status_code=503, error="unavailable", detail="down"), "", None)
            return self.declared
        finally:
            await self._notify()

    async def project_events(self, events: list[Event]) -> ProjectReply:
        self.entered += 1
        await self._notify()
        if self.gate is not None:
            await self.gate.wait()
        self.calls.append(list(events))
        try:
            if self.always_fail or self.fail_next > 0:
                self.fail_next -= 1
                body = ErrorBody(status_code=503, error="unavailable", detail="database down")
                raise ApiError(503, body, "", None)
            if any(self.reject(event) for event in events):
                body = ErrorBody(status_code=422, error="validation_error", detail="bad event")
                raise ApiError(422, body, "", None)
            if any(event.event_id is None for event in events):
                body = ErrorBody(
                    status_code=400, error="validation_error", detail="an event without event_id"
                )
                raise ApiError(400, body, "", None)
            fresh = {
                (e.execution_id, e.event_id): e
                for e in events
                if e.event_id is not None and (e.execution_id, e.event_id) not in self.projected
            }
            self.projected.update(fresh)
            return ProjectReply(projected=len(fresh), duplicates=len(events) - len(fresh))
        finally:
            await self._notify()
