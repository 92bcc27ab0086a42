"""Claims that get no verdict spend no deliveries: an outage of the control-api, or a lease
another worker holds, never sends a command to NOETL_DLQ (real nats-server, fake API)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from noetl_common import ApiUnreachable, TaskSpec
from noetl_dev.fakes import FakeControlPlane, api_error
from noetl_system_worker import ToolRegistry, Worker, WorkerConfig, default_registry
from system_worker_bus import Bus

NOOP = [TaskSpec(name="only", kind="python", config={"code": "result = {'sum': a + b}"})]


class Gate:
    """A tool that blocks until opened."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.started = asyncio.Event()

    async def __call__(self, config: dict[str, Any], args: dict[str, Any], ctx: Any) -> Any:
        self.started.set()
        await self.opened.wait()
        return {"ran": config.get("n")}


def _config(nats_url: str, **env: str) -> WorkerConfig:
    base = {
        "WORKER_ID": "w-retry",
        "NOETL_SERVER_URL": "http://fake-control-api",
        "NOETL_API_TOKEN": "worker-token-for-the-tests-0123456789abcdef",
        "NATS_URL": nats_url,
        "WORKER_HEARTBEAT_INTERVAL": "0.1",
        "WORKER_METRICS_BIND": "127.0.0.1:9999",
        "NOETL_SNOWFLAKE_NODE_ID": "9",
        "WORKER_NATS_LAG_POLL_INTERVAL": "0.1",
    }
    return dataclasses.replace(WorkerConfig.from_env({**base, **env}), fetch_timeout_seconds=0.25)


Start = Callable[..., Any]


@pytest.fixture
async def start(nats_url: str, fake_api: FakeControlPlane) -> AsyncIterator[Start]:
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start(registry: ToolRegistry | None = None, **env: str) -> Worker:
        worker = Worker(_config(nats_url, **env), api_for=lambda _url: fake_api, registry=registry)
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(worker.run(stop))))
        await fake_api.wait_for(
            lambda: any(r.worker_id == worker.config.worker_id for r in fake_api.registrations)
        )
        return worker

    yield start
    for stop, task in running:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 15.0)


async def _is(value: Any, expected: Any) -> bool:
    return await value == expected


async def _dlq_messages(bus: Bus) -> int:
    return (await bus.js.stream_info("NOETL_DLQ")).state.messages


@pytest.mark.parametrize(
    "outage",
    [
        ApiUnreachable("connection refused", sent=False),
        ApiUnreachable("timed out", sent=True),
        api_error(502, "bad_gateway"),
        api_error(503, "unavailable", retry_after=0.05),
        api_error(504, "gateway_timeout"),
    ],
    ids=["connect", "timeout", "502", "503", "504"],
)
async def test_an_outage_longer_than_the_delivery_budget_dead_letters_nothing(
    outage: Exception, fake_api: FakeControlPlane, bus: Bus, start: Start
) -> None:
    """The API goes down before the command is claimed and stays down longer than
    max_deliver * ack_wait: the worker keeps the message in progress and retries the claim;
    once the API is back the command runs, on its first delivery."""
    await start(WORKER_ACK_WAIT_SECONDS="1", WORKER_MAX_DELIVER="2")
    note = fake_api.add_command(NOOP, args={"a": 2, "b": 3})
    fake_api.unreachable = outage
    await bus.publish(note)

    budget = 2 * 1.0  # max_deliver * ack_wait: past it, a nak'd or abandoned message would be gone
    await fake_api.wait_for(
        lambda: len(fake_api.claims) >= 2 and fake_api.claims[-1][2] - fake_api.claims[0][2] > budget,
        timeout=30,
    )
    info = await bus.js.consumer_info("NOETL_COMMANDS", "noetl_worker_pool_shared")
    assert (info.num_ack_pending, info.num_redelivered) == (1, 0), "the message was given back"
    fake_api.unreachable = None

    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id), timeout=30)
    assert fake_api.commands[note.event_id].status == "COMPLETED"
    assert (fake_api.events_of(note.event_id)[-1].context or {})["result"] == {"sum": 5}
    assert fake_api.failed == []
    await bus.until(lambda: _is(bus.stream_messages(), 0))
    assert await _dlq_messages(bus) == 0


async def test_an_eager_command_outlives_its_duplicate_notification_and_completes_once(
    fake_api: FakeControlPlane, bus: Bus, start: Start
) -> None:
    """The control-api hands the next command to its owner in the reply to its events (eager)
    and still publishes its notification; another worker fetches that and meets 429
    lease_held while the owner runs it. The duplicate must wait for the lease, not spend its
    deliveries: were it dead-lettered, the API would fail the command under its owner."""
    fake_api.lease_seconds = 0.5  # a claim meets lease_held for at most this long at a time
    gate = Gate()
    registry = default_registry()
    registry.register("gate", gate)
    await start(registry, WORKER_ID="w-owner", WORKER_MAX_CONCURRENT="1", WORKER_MAX_DELIVER="3")
    first = fake_api.add_command(NOOP, step="first", args={"a": 1, "b": 1})
    second = fake_api.add_command([TaskSpec(name="g", kind="gate", config={"n": "own"})], step="second")
    fake_api.eager_next.append(second.event_id)
    await bus.publish(first)
    await gate.started.wait()  # the owner runs the eager command in its only slot
    assert fake_api.commands[second.event_id].worker_id == "w-owner"

    await start(WORKER_ID="w-other", WORKER_MAX_DELIVER="3")
    await bus.publish(second)  # the duplicate: only w-other has a free slot

    def other_claims() -> int:
        return sum(
            1
            for event_id, worker, _ in fake_api.claims
            if event_id == second.event_id and worker == "w-other"
        )

    # twice the budget of claims, each refused with lease_held (or the command failed under its owner)
    await fake_api.wait_for(lambda: other_claims() >= 6 or bool(fake_api.failed), timeout=30)
    assert fake_api.failed == [], "the duplicate notification was dead-lettered while its owner ran it"
    assert fake_api.commands[second.event_id].status == "CLAIMED"

    gate.opened.set()
    await fake_api.wait_for(lambda: fake_api.terminal(second.event_id))
    events = fake_api.events_of(second.event_id)
    assert [e.event_type for e in events] == ["command.started", "call.done", "command.completed"]
    assert {e.worker_id for e in events} == {"w-owner"}
    assert {(e.meta or {}).get("attempt") for e in events} == {1}
    assert events[-1].context == {"result": {"ran": "own"}}
    # the duplicate is acked once its claim meets the finished command (409)
    await bus.until(lambda: _is(bus.stream_messages(), 0))
    assert await _dlq_messages(bus) == 0
    assert fake_api.commands[second.event_id].status == "COMPLETED"


async def test_a_stop_hands_a_message_waiting_for_its_claim_back_at_once(
    fake_api: FakeControlPlane, bus: Bus, nats_url: str
) -> None:
    """Waiting for the API (or a lease) is not work: a stop request ends the wait at once and
    naks the message for another worker, however long the grace period."""
    worker = Worker(_config(nats_url, WORKER_SHUTDOWN_GRACE_SECONDS="600"), api_for=lambda _url: fake_api)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await fake_api.wait_for(lambda: bool(fake_api.registrations))
    note = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
    fake_api.claim_errors[note.event_id] = [api_error(503, "unavailable", retry_after=600)]
    await bus.publish(note)
    await fake_api.wait_for(lambda: len(fake_api.claims) == 1)

    stop.set()
    await asyncio.wait_for(task, 15.0)  # not the 600 s Retry-After, nor the grace period
    redelivered = await bus.fetch_one()
    assert redelivered.metadata.num_delivered == 2
    assert fake_api.failed == []
