"""``GET /api/executions/{id}/stream``: Server-Sent Events of an execution's events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import ServerSentEvent, ServerSentEventMessage

from .._errors import ValidationFailed
from ..application import EventStreamService, Principal, StreamLimits, client_id
from ._auth import action


def _resume_point(header: str | None, after: int | None) -> int:
    raw: object = header if header not in (None, "") else after
    if raw is None:
        return 0
    try:
        value = int(str(raw))
    except ValueError:
        raise ValidationFailed(f"Last-Event-ID / after must be an event id, got {str(raw)[:40]!r}") from None
    if not 0 <= value < 2**63:
        raise ValidationFailed(f"Last-Event-ID / after must be a non-negative 63-bit id, got {value}")
    return value


class StreamController(Controller):
    """Live progress of one execution."""

    tags = ["executions"]

    @get("/api/executions/{execution_id:str}/stream", opt=action("event.read"))
    async def stream(
        self,
        execution_id: FromPath[str],
        request: Request[Any, Any, Any],
        streams: NamedDependency[EventStreamService],
        stream_limits: NamedDependency[StreamLimits],
        principal: NamedDependency[Principal],
        after: FromQuery[int | None] = None,
    ) -> ServerSentEvent:
        """``text/event-stream``: one message per event (``id:`` = event_id, ``data:`` = the Event
        as JSON), from ``Last-Event-ID`` (or ``?after=``) on; ends after the terminal event."""
        eid = client_id(execution_id, "execution_id")
        start = _resume_point(request.headers.get("last-event-id"), after)
        await streams.check(eid)
        slot = stream_limits.acquire(principal)

        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            try:
                async for event in streams.follow(eid, start):
                    if event is None:
                        yield ServerSentEventMessage(comment="keep-alive")
                    else:
                        yield ServerSentEventMessage(data=msgspec.json.encode(event).decode(), id=event.event_id)
            finally:
                slot.release()

        body = messages()
        slot.bind(body)
        return ServerSentEvent(body)
