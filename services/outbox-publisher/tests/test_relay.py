"""The relay loop against a real nats-server and an in-memory outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from noetl_common import COMMANDS_STREAM, EVENTS_STREAM, OutboxRow, event_subject
from noetl_dev.testing import eventually
from noetl_outbox_publisher import OutboxPublisher, RelaySettings
from prometheus_client import REGISTRY

SETTINGS = RelaySettings(batch_size=100, wait_ms=200, ack_timeout_seconds=5, max_backoff_seconds=0.2)


def event_row(outbox_id: int, event_id: int, execution_id: int = 7, attempts: int = 0) -> OutboxRow:
    payload = {
        "execution_id": execution_id,
        "event_id": event_id,
        "event_type": "command.started",
        "created_at": "2026-01-01T00:00:00.000000Z",
    }
    return OutboxRow(
        outbox_id=outbox_id,
        event_id=event_id,
        execution_id=execution_id,
        subject=event_subject(execution_id, 1),
        payload=payload,
        attempts=attempts,
    )


def marks_of(outbox: Any) -> list[int]:
    """Every mark the publisher asked for, by call or carried by a claim, in order."""
    return [i for ids in outbox.mark_published_calls + outbox.claim_marks for i in ids]


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(f"noetl_outbox_publisher_{name}") or 0.0


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    conn = await nats.connect(nats_url)
    yield conn
    await conn.close()


class Running:
    """A publisher loop in a task, stopped and awaited (bounded) at teardown."""

    def __init__(self, publisher: OutboxPublisher) -> None:
        self.publisher = publisher
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(publisher.run(self.stop))

    async def finish(self, timeout: float = 10.0) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout)


@pytest.fixture
async def running(nc: NATS, outbox: Any) -> AsyncIterator[Running]:
    loop = Running(OutboxPublisher(outbox, nc, SETTINGS))
    yield loop
    await loop.finish()


async def test_publishes_a_batch_with_msg_id_and_marks_it_once(
    nc: NATS, outbox: Any, running: Running
) -> None:
    rows = [event_row(i, 1000 + i) for i in range(1, 6)]
    command = OutboxRow(
        outbox_id=6,
        event_id=2000,
        execution_id=7,
        subject="noetl.commands.shared.7",
        payload={"execution_id": 7, "event_id": 2000, "command_id": 3, "step": "a"},
    )
    await outbox.add(*rows, command)

    await outbox.wait_for(lambda: outbox.published == {1, 2, 3, 4, 5, 6})

    assert sorted(marks_of(outbox)) == [1, 2, 3, 4, 5, 6]  # each once, by a call or a claim
    assert outbox.mark_failed_calls == []
    js = nc.jetstream()
    for seq, row in enumerate(rows, start=1):
        msg = await js.get_msg(EVENTS_STREAM, seq)
        assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == f"{row.execution_id}:{row.event_id}"
        assert msg.subject == row.subject
        assert msg.data is not None and msgspec.json.decode(msg.data) == row.payload
    cmd = await js.get_msg(COMMANDS_STREAM, 1)
    assert cmd.headers is not None and cmd.headers["Nats-Msg-Id"] == "7:2000"
    assert running.publisher.ready()


async def test_a_reclaimed_row_is_deduplicated_by_jetstream(nc: NATS, outbox: Any, running: Running) -> None:
    row = event_row(1, 4242)
    duplicates_before = metric("duplicates_total")
    await outbox.add(row)
    await outbox.wait_for(lambda: marks_of(outbox) == [1])

    # The lease expired before the mark landed: the server offers the row again.
    await outbox.add(row)
    await outbox.wait_for(lambda: marks_of(outbox) == [1, 1])

    info = await nc.jetstream().stream_info(EVENTS_STREAM)
    assert info.state.messages == 1
    assert metric("duplicates_total") == duplicates_before + 1


async def test_rows_of_two_executions_with_one_event_id_are_both_stored(
    nc: NATS, outbox: Any, running: Running
) -> None:
    """Event ids are unique per execution (the outbox's key), not across executions: two
    processes minting with one Snowflake node id in one millisecond (a node lease that lapsed
    and went to another process while its first holder minted on, clocks apart across a
    node id's reuse, explicit node ids) make the same id for two executions. JetStream's
    dedup is keyed by Msg-Id: the second row must not be dropped as a re-publish of the first."""
    first, second = event_row(1, 777, execution_id=7), event_row(2, 777, execution_id=8)
    duplicates_before = metric("duplicates_total")
    await outbox.add(first, second)
    await outbox.wait_for(lambda: outbox.published == {1, 2})

    js = nc.jetstream()
    assert (await js.stream_info(EVENTS_STREAM)).state.messages == 2
    stored = [await js.get_msg(EVENTS_STREAM, seq) for seq in (1, 2)]
    assert [m.headers["Nats-Msg-Id"] for m in stored if m.headers] == ["7:777", "8:777"]
    assert metric("duplicates_total") == duplicates_before


async def test_a_failed_publish_marks_the_row_failed_and_the_rest_published(
    outbox: Any, running: Running
) -> None:
    good = event_row(1, 501)
    orphan = OutboxRow(
        outbox_id=2, event_id=502, execution_id=7, subject="noetl.nowhere.7", payload={"x": 1}, attempts=2
    )
    await outbox.add(good, orphan)

    await outbox.wait_for(lambda: bool(outbox.mark_failed_calls) and bool(outbox.published))

    assert outbox.published == {1}
    [failed] = outbox.mark_failed_calls
    assert failed.outbox_id == 2
    assert failed.attempts == 3
    assert failed.max_delay_seconds == SETTINGS.max_retry_delay_seconds
    assert "NoStreamResponse" in failed.error


async def test_claim_errors_back_off_then_recover(outbox: Any, running: Running) -> None:
    outbox.claim_failures_left = 2
    await outbox.wait_for(lambda: outbox.claim_calls >= 2)
    assert not running.publisher.ready()

    await outbox.add(event_row(1, 9001))
    await outbox.wait_for(lambda: outbox.published == {1})
    assert running.publisher.ready()
    assert not running.task.done()


async def test_stop_finishes_the_batch_in_hand_and_claims_no_more(nc: NATS, outbox: Any) -> None:
    outbox.claim_gate = asyncio.Event()
    loop = Running(OutboxPublisher(outbox, nc, SETTINGS))
    await outbox.wait_for(lambda: outbox.claim_calls == 1)

    loop.stop.set()  # SIGTERM arrives while a claim is in flight
    await outbox.add(event_row(1, 77), event_row(2, 78))
    outbox.claim_gate.set()
    await asyncio.wait_for(loop.task, 10)

    assert outbox.claim_calls == 1
    assert outbox.mark_published_calls == [[1, 2]]
    info = await nc.jetstream().stream_info(EVENTS_STREAM)
    assert info.state.messages == 2
    assert not loop.publisher.ready()


async def test_a_claim_that_outlives_the_shutdown_grace_is_abandoned(nc: NATS, outbox: Any) -> None:
    outbox.claim_gate = asyncio.Event()  # never opened: the API hangs
    settings = dataclasses.replace(SETTINGS, shutdown_grace_seconds=0.1)
    loop = Running(OutboxPublisher(outbox, nc, settings))
    await outbox.wait_for(lambda: outbox.claim_calls == 1)

    await loop.finish()

    assert outbox.claim_calls == 1
    assert outbox.mark_published_calls == []


async def _stream_holds(nc: NATS, messages: int) -> bool:
    try:
        info = await nc.jetstream().stream_info(EVENTS_STREAM)
    except nats.js.errors.NotFoundError:
        return False  # the publisher has not created its streams yet
    return bool(info.state.messages == messages)


class Clock:
    """The publisher's clock for when marks are due, turned by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def parked(outbox: Any, nc: NATS, interval: float, clock: Clock | None = None) -> Running:
    """A publisher whose claims return only when rows come (they park a minute), marking
    once per ``interval``, its stop not waiting for a parked claim."""
    settings = dataclasses.replace(
        SETTINGS, wait_ms=60_000, mark_interval_seconds=interval, shutdown_grace_seconds=0.1
    )
    return Running(OutboxPublisher(outbox, nc, settings, clock=clock or time.monotonic))


async def test_marks_due_ride_on_the_next_claim_and_need_no_call_of_their_own(nc: NATS, outbox: Any) -> None:
    clock = Clock()
    loop = parked(outbox, nc, 30, clock)  # every claim below is one the test caused
    try:
        await outbox.add(event_row(1, 501), event_row(2, 502))
        await eventually(lambda: _stream_holds(nc, 2))
        await outbox.add(event_row(3, 503))  # its claim went out before 1 and 2 were due
        await eventually(lambda: _stream_holds(nc, 3))
        assert outbox.published == set()

        clock.now += 30  # the interval passed: the next claim carries what waits
        await outbox.add(event_row(4, 504))

        await outbox.wait_for(lambda: {1, 2, 3} <= outbox.published)
        assert outbox.mark_published_calls == []
        assert [ids for ids in outbox.claim_marks if ids] == [[1, 2, 3]]
    finally:
        await loop.finish()


async def test_marks_a_parked_claim_cannot_carry_go_out_in_one_call(nc: NATS, outbox: Any) -> None:
    # the claim after the batch parks for a minute: after two intervals a call marks the rows
    loop = parked(outbox, nc, 0.05)
    try:
        await outbox.add(event_row(1, 501), event_row(2, 502))

        await outbox.wait_for(lambda: outbox.published == {1, 2})
        assert outbox.mark_published_calls == [[1, 2]]
        assert outbox.claim_calls == 2 and outbox.claim_marks == [[], []]
    finally:
        await loop.finish()


async def test_a_control_api_that_does_not_mark_on_claim_is_asked_with_a_call(nc: NATS, outbox: Any) -> None:
    outbox.marks_on_claim = False  # an older control-api: no ``marked`` in its claim reply
    clock = Clock()
    loop = parked(outbox, nc, 30, clock)
    try:
        await outbox.add(event_row(1, 501), event_row(2, 502))
        await eventually(lambda: _stream_holds(nc, 2))
        clock.now += 30
        await outbox.add(event_row(3, 503))
        await outbox.wait_for(lambda: [1, 2] in outbox.claim_marks)  # carried, and not marked
        assert outbox.published == set()
        await outbox.add(event_row(4, 504))  # the carrying claim returns (as a long-poll would)

        await outbox.wait_for(lambda: {1, 2} <= outbox.published)
        assert [ids for ids in outbox.claim_marks if ids] == [[1, 2]]
        assert outbox.mark_published_calls == [[1, 2]]
    finally:
        await loop.finish()


async def test_marks_still_waiting_go_out_at_stop(nc: NATS, outbox: Any) -> None:
    # no claim returns before the stop (it parks a minute): the marks wait for the end
    loop = parked(outbox, nc, 60)
    await outbox.add(event_row(1, 601), event_row(2, 602))
    await eventually(lambda: _stream_holds(nc, 2))

    await loop.finish()

    assert outbox.mark_published_calls == [[1, 2]]
