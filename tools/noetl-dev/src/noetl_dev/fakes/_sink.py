"""An in-memory event sink standing in for the control-api's project route (the projector's ``EventSink``).

``tests/contracts`` runs the same cases against this fake and the real control-api.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from noetl_common import ApiError, ErrorBody, Event, ProjectReply


class MemorySink:
    """Implements ``EventSink``; records every call, can block, fail or reject events."""

    def __init__(self) -> None:
        self.calls: list[list[Event]] = []
        self.projected: dict[int, Event] = {}
        self.fail_next = 0
        self.always_fail = False
        self.reject: Callable[[Event], bool] = lambda _event: False
        self.gate: asyncio.Event | None = None
        self.entered = 0
        self.changed = asyncio.Condition()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(predicate), timeout)

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
            fresh = {e.event_id: e for e in events if e.event_id not in self.projected}
            self.projected.update({k: v for k, v in fresh.items() if k is not None})
            return ProjectReply(projected=len(fresh), duplicates=len(events) - len(fresh))
        finally:
            await self._notify()
