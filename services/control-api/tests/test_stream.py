"""``GET /api/executions/{id}/stream`` wake-ups: a projected event wakes the streams of its
execution only, a batch too wide to name its executions wakes every stream.

Each test acts once the streams are parked (registered and waiting) and counts how many
waits ended early (``noetl_control_api_stream_wakeups_total``). Notifications reach the
one listener in commit order, so once a later notification has been handled, an earlier
one has been too.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
from noetl_common import Event, Snowflake
from noetl_control_api.application import EventStreamService
from noetl_control_api.store import EVENT_CHANNEL, WAKE_ALL
from prometheus_client import REGISTRY

#: longer than any test takes: only a wake-up ends a wait earlier
HELD = 30
IDS = Snowflake(901)


def _wakeups() -> float:
    return REGISTRY.get_sample_value("noetl_control_api_stream_wakeups_total") or 0.0


def _event(execution_id: int) -> dict[str, Any]:
    return {"execution_id": execution_id, "event_id": IDS.next_id(), "event_type": "step.enter", "step": "start"}


async def _project(api: Any, events: list[dict[str, Any]]) -> None:
    reply = await api.client.post("/api/internal/events/project", json={"events": events}, headers=api.auth)
    assert reply.status_code == 200, reply.text


async def _parked(streams: EventStreamService, count: int, since: float | None = None) -> None:
    """Return once ``count`` streams are waiting (and, with ``since``, one was woken after it)."""

    def ready() -> bool:
        return streams.waiting >= count and (since is None or _wakeups() > since)

    async with streams.parked:
        await asyncio.wait_for(streams.parked.wait_for(ready), HELD)


async def _next(stream: AsyncIterator[Event | None]) -> Event:
    event = await asyncio.wait_for(anext(stream), HELD)
    assert event is not None
    return event


async def test_a_stream_wakes_for_its_own_execution_only(api: Any) -> None:
    await api.register()
    a, b, c = [await api.execute() for _ in range(3)]
    streams: EventStreamService = api.client.app.state.services.streams
    follow_a, follow_c = streams.follow(a), streams.follow(c)
    next_a = asyncio.create_task(_next(follow_a))
    next_c = asyncio.create_task(_next(follow_c))
    await _parked(streams, 2)  # nothing projected yet: both wait
    start = _wakeups()

    await _project(api, [_event(b), _event(b)])  # nobody follows b
    sentinel = _event(c)
    await _project(api, [sentinel])
    assert (await next_c).event_id == sentinel["event_id"]
    # b's notification was handled before c's: had it woken a's stream, that wait would count
    assert _wakeups() - start == 1
    assert not next_a.done() and streams.waiting == 1

    own = _event(a)
    await _project(api, [_event(b), own])  # one batch, two executions: a's stream wakes
    assert (await next_a).event_id == own["event_id"]
    assert _wakeups() - start == 2
    await follow_a.aclose()
    await follow_c.aclose()


async def test_a_batch_too_wide_to_name_its_executions_wakes_every_stream(api: Any) -> None:
    await api.register()
    a = await api.execute()
    streams: EventStreamService = api.client.app.state.services.streams
    follow_a = streams.follow(a)
    next_a = asyncio.create_task(_next(follow_a))
    await _parked(streams, 1)
    start = _wakeups()

    # 500 executions' ids do not fit in one NOTIFY payload (8000 bytes): everyone wakes
    await _project(api, [_event(IDS.next_id()) for _ in range(500)])
    await _parked(streams, 1, since=start)  # a's stream woke, found nothing of its own, waits again
    assert _wakeups() - start == 1 and not next_a.done()

    own = _event(a)
    await _project(api, [own])
    assert (await next_a).event_id == own["event_id"]
    await follow_a.aclose()


async def test_the_projection_names_the_executions_it_projected(api: Any, database_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {EVENT_CHANNEL}")
        notifies = listener.notifies(timeout=HELD)

        first, second = IDS.next_id(), IDS.next_id()
        batch = [_event(second), _event(first), _event(second)]
        await _project(api, batch)
        assert (await anext(notifies)).payload == f"{first},{second}"  # each once

        await _project(api, batch)  # nothing new: no notification
        await api.db.execute("SELECT pg_notify(%s, 'sentinel')", (EVENT_CHANNEL,))
        assert (await anext(notifies)).payload == "sentinel"

        await _project(api, [_event(IDS.next_id()) for _ in range(500)])
        assert (await anext(notifies)).payload == WAKE_ALL
        await notifies.aclose()  # it holds the connection's lock until closed
