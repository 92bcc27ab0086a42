"""The projection loop against a real nats-server and an in-memory sink."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import nats
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from noetl_common import (
    DLQ_STREAM,
    EVENTS_STREAM,
    ConfigError,
    Event,
    dlq_subject,
    ensure_streams,
    event_subject,
)
from noetl_dev.testing import eventually
from noetl_projector import (
    HEADER_ERROR,
    HEADER_ORIGINAL_SUBJECT,
    HEADER_REASON,
    Projector,
    ProjectorSettings,
)
from prometheus_client import REGISTRY

SETTINGS = ProjectorSettings(
    batch_size=100,
    fetch_timeout_seconds=0.2,
    ack_wait_seconds=30,
    max_deliver=5,
    nak_delay_seconds=0.05,
    nak_max_delay_seconds=0.2,
    max_backoff_seconds=0.2,
)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(f"noetl_projector_{name}", labels) or 0.0


def event(event_id: int, execution_id: int = 7) -> Event:
    return Event(execution_id=execution_id, event_id=event_id, event_type="command.started", step="a")


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_url)
    await ensure_streams(conn.jetstream())
    yield conn
    await conn.close()


async def publish(nc: NATS, *items: Event | bytes, execution_id: int = 7, shard_count: int = 1) -> None:
    js = nc.jetstream()
    for item in items:
        data = item if isinstance(item, bytes) else msgspec.json.encode(item)
        exec_id = execution_id if isinstance(item, bytes) else item.execution_id
        await js.publish(event_subject(exec_id, shard_count), data)


class Running:
    """A projector loop in a task, stopped and awaited (bounded) at teardown."""

    def __init__(self, projector: Projector) -> None:
        self.projector = projector
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(projector.run(self.stop))

    async def finish(self, timeout: float = 10.0) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout)


@pytest.fixture
async def start(nc: NATS, sink: Any) -> AsyncIterator[Callable[..., Running]]:
    loops: list[Running] = []

    def _start(settings: ProjectorSettings = SETTINGS) -> Running:
        loops.append(Running(Projector(sink, nc, settings)))
        return loops[-1]

    yield _start
    for loop in loops:
        await loop.finish()


async def settled(nc: NATS, consumer: str = "noetl_projector_0") -> bool:
    info = await nc.jetstream().consumer_info(EVENTS_STREAM, consumer)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_projects_a_batch_in_one_call_and_acks_it(nc: NATS, sink: Any, start: Any) -> None:
    await publish(nc, *(event(i) for i in range(1, 6)))
    start()

    await sink.wait_for(lambda: len(sink.projected) == 5)
    await eventually(lambda: settled(nc))

    assert [[e.event_id for e in call] for call in sink.calls] == [[1, 2, 3, 4, 5]]


async def test_a_trickle_of_events_lingers_into_one_project_call(nc: NATS, sink: Any, start: Any) -> None:
    # a linger far longer than the test: the batch of 3 ends it by being full, not by time
    start(dataclasses.replace(SETTINGS, batch_size=3, linger_seconds=60.0))
    await publish(nc, event(31))

    async def first_in_hand() -> bool:  # fetched, not projected: the loop is lingering
        try:
            info = await nc.jetstream().consumer_info(EVENTS_STREAM, "noetl_projector_0")
        except nats.js.errors.NotFoundError:
            return False  # the loop has not created its consumer yet
        return info.num_ack_pending == 1 and not sink.calls

    await eventually(first_in_hand)
    await publish(nc, event(32), event(33))

    await sink.wait_for(lambda: len(sink.projected) == 3)
    await eventually(lambda: settled(nc))
    assert [[e.event_id for e in call] for call in sink.calls] == [[31, 32, 33]]


async def test_acks_only_after_the_sink_accepted(nc: NATS, sink: Any, start: Any) -> None:
    sink.gate = asyncio.Event()
    await publish(nc, event(1), event(2), event(3))
    loop = start()
    await sink.wait_for(lambda: sink.entered == 1)

    info = await nc.jetstream().consumer_info(EVENTS_STREAM, "noetl_projector_0")
    assert info.num_ack_pending == 3
    assert loop.projector.ready()

    sink.gate.set()
    await eventually(lambda: settled(nc))
    assert sink.event_ids() == {1, 2, 3}


async def test_a_failed_projection_is_nakd_and_really_redelivered(nc: NATS, sink: Any, start: Any) -> None:
    sink.fail_next = 1
    redelivered_before = metric("redelivered_total")
    naks_before = metric("naks_total")
    await publish(nc, event(11), event(12))
    start()

    await sink.wait_for(lambda: len(sink.projected) == 2)
    await eventually(lambda: settled(nc))

    first, second = sink.calls
    assert [e.event_id for e in first] == [e.event_id for e in second] == [11, 12]
    assert metric("naks_total") == naks_before + 2
    # JetStream itself delivered the messages a second time (num_delivered > 1).
    assert metric("redelivered_total") == redelivered_before + 2


async def test_poison_messages_go_to_the_dlq_and_the_rest_is_projected(
    nc: NATS, sink: Any, start: Any
) -> None:
    no_id = msgspec.json.encode({"execution_id": 7, "event_type": "command.started"})
    await publish(nc, event(21), b"{not json", event(22), no_id)
    start()

    await sink.wait_for(lambda: sink.event_ids() == {21, 22})
    await eventually(lambda: settled(nc))

    dead = await nc.jetstream().get_msg(DLQ_STREAM, 1)
    original = event_subject(7, 1)
    assert dead.subject == dlq_subject(original)
    assert dead.data == b"{not json"
    assert dead.headers is not None
    assert dead.headers[HEADER_ORIGINAL_SUBJECT] == original
    assert dead.headers[HEADER_REASON] == "undecodable"
    assert "not an Event" in dead.headers[HEADER_ERROR]
    without_id = await nc.jetstream().get_msg(DLQ_STREAM, 2)
    assert without_id.data == no_id
    assert without_id.headers is not None and "without event_id" in without_id.headers[HEADER_ERROR]
    assert (await nc.jetstream().stream_info(DLQ_STREAM)).state.messages == 2


async def test_an_event_the_api_rejects_is_isolated_and_dead_lettered(
    nc: NATS, sink: Any, start: Any
) -> None:
    sink.reject = lambda e: e.event_id == 33
    await publish(nc, *(event(i) for i in range(31, 36)))
    start()

    await sink.wait_for(lambda: sink.event_ids() == {31, 32, 34, 35})
    await eventually(lambda: settled(nc))

    dead = await nc.jetstream().get_msg(DLQ_STREAM, 1)
    assert dead.headers is not None and dead.headers[HEADER_REASON] == "rejected"
    assert msgspec.json.decode(dead.data or b"", type=Event).event_id == 33
    assert (await nc.jetstream().stream_info(DLQ_STREAM)).state.messages == 1


async def test_the_last_allowed_delivery_parks_the_message_in_the_dlq(
    nc: NATS, sink: Any, start: Any
) -> None:
    sink.always_fail = True
    await publish(nc, event(41))
    loop = start(dataclasses.replace(SETTINGS, max_deliver=2))

    async def parked() -> bool:
        return (await nc.jetstream().stream_info(DLQ_STREAM)).state.messages == 1

    await eventually(parked)
    await eventually(lambda: settled(nc))

    assert len(sink.calls) == 2
    dead = await nc.jetstream().get_msg(DLQ_STREAM, 1)
    assert dead.headers is not None and dead.headers[HEADER_REASON] == "max_deliver"
    assert "database down" in dead.headers[HEADER_ERROR]
    assert not loop.projector.ready()


async def test_a_shard_consumes_only_its_own_subjects(nc: NATS, sink: Any, start: Any) -> None:
    await publish(nc, event(51, execution_id=3), event(52, execution_id=4), shard_count=2)
    sink.declared = msgspec.structs.replace(sink.declared, event_shard_count=2)
    start(dataclasses.replace(SETTINGS, shard=1, shard_count=2))

    await sink.wait_for(lambda: bool(sink.projected))
    await eventually(lambda: settled(nc, "noetl_projector_1"))

    assert sorted(sink.event_ids()) == [51]
    info = await nc.jetstream().consumer_info(EVENTS_STREAM, "noetl_projector_1")
    assert info.config.filter_subject == "noetl.events.*.*.*.1"


async def test_a_shard_count_other_than_the_apis_refuses_the_start(nc: NATS, sink: Any) -> None:
    """The control-api writes events on 4 shards; a projector counting 2 would leave shards 2
    and 3 to nobody. It refuses to start (ConfigError: exit 2) before making a consumer."""
    sink.declared = msgspec.structs.replace(sink.declared, event_shard_count=4)
    projector = Projector(sink, nc, dataclasses.replace(SETTINGS, shard=1, shard_count=2))
    with pytest.raises(ConfigError, match="NOETL_EVENT_SHARD_COUNT is 2 here but 4 at the control-api"):
        await asyncio.wait_for(projector.run(asyncio.Event()), 10)
    assert sink.calls == []
    with pytest.raises(nats.js.errors.NotFoundError):
        await nc.jetstream().consumer_info(EVENTS_STREAM, "noetl_projector_1")


async def test_the_shard_count_is_checked_once_the_api_answers(nc: NATS, sink: Any, start: Any) -> None:
    sink.limits_failures_left = 2  # the API is down at start: retried with backoff, nothing fetched
    await publish(nc, event(81))
    loop = start()
    await sink.wait_for(lambda: sink.event_ids() == {81})
    assert loop.projector.details()["shard_count_checked"] is True
    assert sink.limits_failures_left == 0


async def test_an_api_that_does_not_declare_its_shard_count_is_trusted(nc: NATS, sink: Any, start: Any) -> None:
    sink.declared = msgspec.structs.replace(sink.declared, event_shard_count=None)  # an older control-api
    await publish(nc, event(91))
    start()
    await sink.wait_for(lambda: sink.event_ids() == {91})


async def test_stop_finishes_the_batch_in_hand(nc: NATS, sink: Any) -> None:
    sink.gate = asyncio.Event()
    await publish(nc, event(61), event(62))
    loop = Running(Projector(sink, nc, SETTINGS))
    await sink.wait_for(lambda: sink.entered == 1)

    loop.stop.set()  # SIGTERM arrives while the batch is with the API
    sink.gate.set()
    await asyncio.wait_for(loop.task, 10)

    assert sink.event_ids() == {61, 62}
    await eventually(lambda: settled(nc))
    assert sink.entered == 1


async def test_a_batch_that_outlives_the_shutdown_grace_is_handed_back(nc: NATS, sink: Any) -> None:
    sink.gate = asyncio.Event()  # never opened: the API hangs
    redelivered_before = metric("redelivered_total")
    await publish(nc, event(71))
    settings = dataclasses.replace(SETTINGS, shutdown_grace_seconds=0.1)
    hung = Running(Projector(sink, nc, settings))
    await sink.wait_for(lambda: sink.entered == 1)

    await hung.finish()

    # The nak makes the message available at once, long before its 30 s ack_wait.
    sink.gate = None
    successor = Running(Projector(sink, nc, SETTINGS))
    try:
        await sink.wait_for(lambda: sink.event_ids() == {71})
    finally:
        await successor.finish()
    assert metric("redelivered_total") == redelivered_before + 1
