"""The worker loop against a real nats-server and an in-memory fake of our control-api."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from noetl_common import ApiUnreachable, Event, Rule, TaskSpec
from noetl_dev.fakes import FakeControlPlane, api_error
from noetl_system_worker import ToolRegistry, Worker, WorkerConfig, default_registry
from prometheus_client import REGISTRY
from system_worker_bus import Bus


class Gate:
    """A tool that blocks until opened, tracking how many calls run at once."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.running = 0
        self.max_running = 0
        self.started = 0
        self._changed = asyncio.Condition()

    async def __call__(self, config: dict[str, Any], args: dict[str, Any], ctx: Any) -> Any:
        async with self._changed:
            self.running += 1
            self.started += 1
            self.max_running = max(self.max_running, self.running)
            self._changed.notify_all()
        try:
            await self.opened.wait()
        finally:
            self.running -= 1
        return {"passed": config.get("n")}

    async def wait_started(self, count: int, timeout: float = 10.0) -> None:
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.started >= count), timeout)


def _base_env(nats_url: str) -> dict[str, str]:
    return {
        "WORKER_ID": "w-test",
        "NOETL_SERVER_URL": "http://fake-control-api",
        "NOETL_API_TOKEN": "worker-token-for-the-tests-0123456789abcdef",
        "NATS_URL": nats_url,
        "WORKER_HEARTBEAT_INTERVAL": "0.1",
        "WORKER_METRICS_BIND": "127.0.0.1:9999",
        "NOETL_SNOWFLAKE_NODE_ID": "7",
        "WORKER_NATS_LAG_POLL_INTERVAL": "0.1",
    }


def config_for(nats_url: str, **env: str) -> WorkerConfig:
    base = _base_env(nats_url)
    # A short pull keeps each test's shutdown quick; production uses the 2 s default.
    return dataclasses.replace(WorkerConfig.from_env({**base, **env}), fetch_timeout_seconds=0.25)


class Running:
    """A worker running in the background of a test."""

    def __init__(self, worker: Worker, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
        self.worker = worker
        self.stop = stop
        self.task = task

    async def shutdown(self, timeout: float = 15.0) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout)


StartWorker = Callable[..., Any]


@pytest.fixture
async def start_worker(nats_url: str, fake_api: FakeControlPlane) -> AsyncIterator[StartWorker]:
    started: list[Running] = []

    async def start(registry: ToolRegistry | None = None, **env: str) -> Running:
        worker = Worker(config_for(nats_url, **env), api_for=lambda _url: fake_api, registry=registry)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        running = Running(worker, stop, task)
        started.append(running)
        await fake_api.wait_for(lambda: bool(fake_api.registrations))
        return running

    yield start
    for running in started:
        running.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running.task, 15.0)


def sample(name: str, **labels: str) -> float | None:
    """Current value of one of the worker's metrics (process-wide registry)."""
    return REGISTRY.get_sample_value(f"noetl_system_worker_{name}", labels)


def types(events: list[Event]) -> list[str]:
    return [e.event_type for e in events]


NOOP = [TaskSpec(name="only", kind="python", config={"code": "result = {'sum': a + b}"})]


async def test_claims_runs_and_posts_events_in_order(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    note = fake_api.add_command(NOOP, step="add", args={"a": 1, "b": 2})
    await bus.publish(note)

    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    events = fake_api.events_of(note.event_id)
    assert types(events) == ["command.started", "call.done", "command.completed"]
    done = events[-1]
    assert done.context == {"result": {"sum": 3}}
    assert events[1].context == {"result": {"sum": 3}}
    for event in events:
        assert event.execution_id == note.execution_id
        assert event.step == "add"
        assert event.worker_id == "w-test"
        assert event.meta == {"attempt": 1, "command_id": note.command_id}
        assert event.event_id is not None and event.created_at
    assert len({e.event_id for e in events}) == 3
    # a quick tool: command.started rides at the head of the terminal batch (one round trip)
    posted = [types(batch) for batch in fake_api.posts if "command.heartbeat" not in types(batch)]
    assert posted == [["command.started", "call.done", "command.completed"]]
    assert fake_api.claims[0][:2] == (note.event_id, "w-test")
    await bus.until(lambda: _is(bus.stream_messages(), 0))


async def test_a_slow_tool_has_command_started_posted_while_it_runs(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    slow = [TaskSpec(name="only", kind="python", config={"code": "import time\ntime.sleep(0.3)\nresult = 1"})]
    note = fake_api.add_command(slow, step="slow")
    await bus.publish(note)

    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    posted = [types(batch) for batch in fake_api.posts if "command.heartbeat" not in types(batch)]
    assert posted == [["command.started"], ["call.done", "command.completed"]]


async def _is(value: Any, expected: Any) -> bool:
    return (await value) == expected


async def test_failed_pipeline_posts_call_error_and_command_failed(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    note = fake_api.add_command(
        [TaskSpec(name="bad", kind="python", config={"code": "raise ValueError('nope')"})]
    )
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    events = fake_api.events_of(note.event_id)
    assert types(events) == ["command.started", "call.error", "command.failed"]
    error = {
        "message": "nope",
        "type": "ValueError",
        "task": "bad",
        "kind": "tool_error",
        "retryable": False,
        "code": None,
    }
    assert events[-1].context == {"error": error}
    await bus.until(lambda: _is(bus.stream_messages(), 0))


async def test_set_patch_is_carried_by_command_completed(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    task = TaskSpec(
        name="t",
        kind="python",
        config={"code": "result = {'n': 5}"},
        rules=[Rule(set={"ctx.n": "{{ output.data.n }}"})],
    )
    note = fake_api.add_command([task])
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    assert fake_api.events_of(note.event_id)[-1].context == {"result": {"n": 5}, "set": {"ctx.n": 5}}


async def test_unknown_tool_kind_fails_the_step_and_worker_keeps_running(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    bad = fake_api.add_command([TaskSpec(name="x", kind="teleport")])
    good = fake_api.add_command(NOOP, args={"a": 2, "b": 2})
    await bus.publish(bad)
    await bus.publish(good)
    await fake_api.wait_for(lambda: fake_api.terminal(bad.event_id) and fake_api.terminal(good.event_id))
    error = (fake_api.events_of(bad.event_id)[-1].context or {})["error"]
    assert "teleport" in error["message"]
    assert fake_api.events_of(good.event_id)[-1].event_type == "command.completed"


async def test_acks_only_after_the_terminal_event_was_accepted(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    """The API refuses the first terminal POST with 503: the message stays un-acked until
    the retried POST (same event ids) is accepted, and is acked after that."""
    terminal_posts: list[tuple[list[int | None], int, int]] = []

    async def hook(events: list[Event]) -> Any:
        if "command.completed" not in types(events):
            return None
        ack_pending, _ = await bus.consumer()
        terminal_posts.append(([e.event_id for e in events], ack_pending, await bus.stream_messages()))
        return api_error(503, "unavailable", retry_after=0.05) if len(terminal_posts) == 1 else None

    fake_api.post_hook = hook
    await start_worker()
    note = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))

    assert len(terminal_posts) == 2
    (ids_1, pending_1, stored_1), (ids_2, pending_2, stored_2) = terminal_posts
    assert ids_1 == ids_2, "a retried POST must reuse its event ids"
    assert (pending_1, stored_1) == (1, 1), "acked before the terminal event was accepted"
    assert (pending_2, stored_2) == (1, 1), "acked before the terminal event was accepted"
    assert types(fake_api.events_of(note.event_id)) == ["command.started", "call.done", "command.completed"]
    await bus.until(lambda: _is(bus.consumer(), (0, 0)))
    assert await bus.stream_messages() == 0


async def test_claim_conflict_is_acked_and_dropped(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    note = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
    fake_api.commands[note.event_id].status = "COMPLETED"
    await bus.publish(note)
    await fake_api.wait_for(lambda: len(fake_api.claims) == 1)
    await bus.until(lambda: _is(bus.stream_messages(), 0))
    assert fake_api.events_of(note.event_id) == []
    assert len(fake_api.claims) == 1


async def test_claim_not_found_is_acked_and_dropped(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    note = fake_api.add_command(NOOP)
    del fake_api.commands[note.event_id]
    await bus.publish(note)
    await fake_api.wait_for(lambda: len(fake_api.claims) == 1)
    await bus.until(lambda: _is(bus.stream_messages(), 0))
    assert fake_api.events == [] or all(e.event_type == "command.heartbeat" for e in fake_api.events)


@pytest.mark.parametrize("status", [503, 429, 408])
async def test_claim_unavailable_is_claimed_again_after_retry_after_on_the_same_delivery(
    status: int, fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    note = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
    fake_api.claim_errors[note.event_id] = [api_error(status, "unavailable", retry_after=0.4)]
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    assert [c[0] for c in fake_api.claims] == [note.event_id, note.event_id]
    gap = fake_api.claims[1][2] - fake_api.claims[0][2]
    assert gap >= 0.35, f"claimed again after {gap:.3f}s, before the Retry-After delay"
    await bus.until(lambda: _is(bus.stream_messages(), 0))


async def test_bounded_concurrency(fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker) -> None:
    gate = Gate()
    registry = default_registry()
    registry.register("gate", gate)
    running = await start_worker(registry, WORKER_MAX_CONCURRENT="2")
    notes = [fake_api.add_command([TaskSpec(name="g", kind="gate", config={"n": i})]) for i in range(5)]
    for note in notes:
        await bus.publish(note)

    await gate.wait_started(2)
    # Two commands run; the other three were never fetched (not even delivered).
    await bus.until(lambda: _is(bus.consumer(), (2, 3)))
    assert running.worker.in_flight == 2
    assert gate.running == 2
    await bus.until(lambda: _bool(sample("consumer_pending", pool="shared") == 3))
    assert sample("in_flight", pool="shared") == 2
    completed_before = sample("commands_total", pool="shared", outcome="completed") or 0

    gate.opened.set()
    await fake_api.wait_for(lambda: all(fake_api.terminal(n.event_id) for n in notes))
    assert gate.started == 5
    assert gate.max_running == 2
    await bus.until(
        lambda: _bool(sample("commands_total", pool="shared", outcome="completed") == completed_before + 5)
    )
    await bus.until(lambda: _is(bus.stream_messages(), 0))


async def test_heartbeats_while_running(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    gate = Gate()
    registry = default_registry()
    registry.register("gate", gate)
    await start_worker(registry)
    note = fake_api.add_command([TaskSpec(name="g", kind="gate")])
    await bus.publish(note)
    await fake_api.wait_for(
        lambda: (
            len(
                [
                    e
                    for e in fake_api.events_of(note.event_id, heartbeats=True)
                    if e.event_type == "command.heartbeat"
                ]
            )
            >= 2
        )
    )
    assert (await bus.consumer())[0] == 1
    gate.opened.set()
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    kinds = types(fake_api.events_of(note.event_id, heartbeats=True))
    assert kinds[0] == "command.started" and kinds[-2:] == ["call.done", "command.completed"]
    assert set(kinds[1:-2]) == {"command.heartbeat"}


async def test_heartbeats_follow_a_short_lease(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    gate = Gate()
    registry = default_registry()
    registry.register("gate", gate)
    fake_api.lease_seconds = 0.3
    await start_worker(registry, WORKER_HEARTBEAT_INTERVAL="5")
    note = fake_api.add_command([TaskSpec(name="g", kind="gate")])
    await bus.publish(note)
    # Two renewals well within one 5 s interval: the lease, not the interval, sets the pace.
    await fake_api.wait_for(
        lambda: types(fake_api.events_of(note.event_id, heartbeats=True)).count("command.heartbeat") >= 2,
        timeout=3,
    )
    gate.opened.set()
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))


async def test_stale_attempt_on_terminal_post_stops_acks_and_drops(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    async def hook(events: list[Event]) -> Any:
        return api_error(409, "stale_attempt") if "command.completed" in types(events) else None

    fake_api.post_hook = hook
    await start_worker()
    note = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
    await bus.publish(note)
    await fake_api.wait_for(lambda: any("command.completed" in types(p) for p in fake_api.posts))
    await bus.until(lambda: _is(bus.stream_messages(), 0))
    assert sum("command.completed" in types(p) for p in fake_api.posts) == 1
    assert not fake_api.terminal(note.event_id)


async def test_lost_lease_abandons_the_run(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    gate = Gate()
    registry = default_registry()
    registry.register("gate", gate)

    async def hook(events: list[Event]) -> Any:
        return api_error(409, "stale_attempt") if "command.heartbeat" in types(events) else None

    fake_api.post_hook = hook
    running = await start_worker(registry)
    note = fake_api.add_command([TaskSpec(name="g", kind="gate")])
    await bus.publish(note)
    await gate.wait_started(1)
    await bus.until(lambda: _is(bus.stream_messages(), 0))
    assert running.worker.in_flight == 0
    assert types(fake_api.events_of(note.event_id)) == ["command.started"]


async def test_undecodable_message_is_terminated(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    await bus.publish_raw(b"{not json")
    note = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    await bus.until(lambda: _is(bus.consumer(), (0, 0)))
    assert len(fake_api.claims) == 1


async def test_graceful_stop_lets_in_flight_commands_finish(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    gate = Gate()
    registry = default_registry()
    registry.register("gate", gate)
    running = await start_worker(registry, WORKER_SHUTDOWN_GRACE_SECONDS="20")
    note = fake_api.add_command([TaskSpec(name="g", kind="gate")])
    await bus.publish(note)
    await gate.wait_started(1)
    assert running.worker.ready()

    running.stop.set()
    await bus.until(lambda: _bool(not running.worker.ready()))
    assert not running.task.done(), "returned before the in-flight command finished"
    gate.opened.set()
    await asyncio.wait_for(running.task, 15)
    assert fake_api.terminal(note.event_id)
    assert await bus.stream_messages() == 0
    assert fake_api.deregistered == ["w-test"]


async def _bool(value: bool) -> bool:
    return value


async def test_graceful_stop_releases_commands_after_the_grace_period(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    gate = Gate()
    registry = default_registry()
    registry.register("gate", gate)
    running = await start_worker(registry, WORKER_SHUTDOWN_GRACE_SECONDS="0.2")
    note = fake_api.add_command([TaskSpec(name="g", kind="gate")])
    await bus.publish(note)
    await gate.wait_started(1)

    started = time.monotonic()
    await running.shutdown()
    assert time.monotonic() - started < 10
    # Nak'd, not acked and not merely abandoned: the message is delivered again at once
    # (an abandoned one would wait for the 30 s ack wait), and nothing was completed.
    assert await bus.stream_messages() == 1
    redelivered = await bus.fetch_one(timeout=5)
    assert redelivered.metadata.num_delivered == 2
    assert types(fake_api.events_of(note.event_id)) == ["command.started"]
    assert fake_api.deregistered == ["w-test"]


async def test_second_worker_takes_over_a_released_command(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    gate = Gate()
    registry = default_registry()
    registry.register("gate", gate)
    first = await start_worker(registry, WORKER_SHUTDOWN_GRACE_SECONDS="0")
    note = fake_api.add_command([TaskSpec(name="g", kind="gate")])
    await bus.publish(note)
    await gate.wait_started(1)
    await first.shutdown()
    # The fake keeps the first claim; expire it as the real lease would.
    fake_api.commands[note.event_id].status = "PENDING"
    gate.opened.set()
    await start_worker(registry, WORKER_ID="w-second")
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    final = fake_api.events_of(note.event_id)[-1]
    assert final.worker_id == "w-second" and final.meta == {"attempt": 2, "command_id": note.command_id}


async def test_registers_heartbeats_and_reports_readiness(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    running = await start_worker(WORKER_MAX_CONCURRENT="3", WORKER_POOL_NAME="system")
    registration = fake_api.registrations[0]
    assert (registration.worker_id, registration.pool, registration.capacity) == ("w-test", "system", 3)
    await fake_api.wait_for(lambda: len(fake_api.heartbeats) >= 2)
    assert fake_api.heartbeats[0].pool == "system"
    await bus.until(lambda: _bool(running.worker.ready()))
    assert running.worker.details()["pool"] == "system"
    info = await bus.js.consumer_info("NOETL_COMMANDS", "noetl_worker_pool_system")
    assert info.config.filter_subject == "noetl.commands.system.>"
    await running.shutdown()
    assert not running.worker.ready()
    assert fake_api.deregistered == ["w-test"]


async def test_system_pool_runs_only_system_subjects(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker(WORKER_POOL_NAME="system")
    shared = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
    system = fake_api.add_command(NOOP, args={"a": 2, "b": 2})
    await bus.publish(shared, pool="shared")
    await bus.publish(system, pool="system")
    await fake_api.wait_for(lambda: fake_api.terminal(system.event_id))
    # The system command is acked (after its terminal event); the shared one waits for a shared worker.
    await bus.until(lambda: _is(bus.stream_messages(), 1))
    assert await bus.consumer("system") == (0, 0)
    assert [c[0] for c in fake_api.claims] == [system.event_id]


async def test_command_timeout_fails_the_step(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    gate = Gate()
    registry = default_registry()
    registry.register("gate", gate)
    await start_worker(registry)
    note = fake_api.add_command([TaskSpec(name="g", kind="gate")], timeout_seconds=0.3)
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    error = (fake_api.events_of(note.event_id)[-1].context or {})["error"]
    assert error["type"] == "TimeoutError" and "0.3" in error["message"]
    await bus.until(lambda: _is(bus.stream_messages(), 0))


async def test_results_that_are_not_json_become_strings(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    code = "import decimal\nresult = {'d': decimal.Decimal('1.5'), 'obj': object.__name__, 'n': 1}"
    note = fake_api.add_command([TaskSpec(name="t", kind="python", config={"code": code})])
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    assert fake_api.events_of(note.event_id)[-1].context == {"result": {"d": "1.5", "obj": "object", "n": 1}}


async def test_result_refused_by_the_api_is_reported_as_failed(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    async def hook(events: list[Event]) -> Any:
        return api_error(413, "payload_too_large") if "command.completed" in types(events) else None

    fake_api.post_hook = hook
    await start_worker()
    note = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    events = fake_api.events_of(note.event_id)
    assert types(events) == ["command.started", "call.error", "command.failed"]
    assert (events[-1].context or {})["error"]["type"] == "EventRejected"
    await bus.until(lambda: _is(bus.stream_messages(), 0))


async def test_stop_while_nats_is_unreachable_returns(fake_api: FakeControlPlane) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    worker = Worker(config_for(f"nats://127.0.0.1:{port}"), api_for=lambda _url: fake_api)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait({task}, timeout=0.5)  # give the connect attempt time to be under way
    assert not task.done() and not worker.ready()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert fake_api.registrations == []


async def test_event_ids_carry_the_node_id_leased_at_registration(
    nats_url: str, fake_api: FakeControlPlane, bus: Bus
) -> None:
    fake_api.node_id = 613
    env = {k: v for k, v in _base_env(nats_url).items() if k != "NOETL_SNOWFLAKE_NODE_ID"}
    worker = Worker(
        dataclasses.replace(WorkerConfig.from_env(env), fetch_timeout_seconds=0.25),
        api_for=lambda _url: fake_api,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        note = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
        await bus.publish(note)
        await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
        nodes = {
            ((e.event_id or 0) >> 12) & 0x3FF for e in fake_api.events_of(note.event_id, heartbeats=True)
        }
        assert nodes == {613}
    finally:
        stop.set()
        await asyncio.wait_for(task, 15.0)


async def test_heartbeats_lost_for_half_the_node_lease_make_the_worker_register_again(
    nats_url: str, fake_api: FakeControlPlane, bus: Bus
) -> None:
    """A node id not renewed for its lease may have gone to another process (and a heartbeat
    reply would not say): after heartbeats failed for half the lease the worker registers
    again and mints with the node id that registration leases."""
    fake_api.node_id, fake_api.node_lease_seconds = 613, 1.0
    env = {k: v for k, v in _base_env(nats_url).items() if k != "NOETL_SNOWFLAKE_NODE_ID"}
    worker = Worker(
        dataclasses.replace(WorkerConfig.from_env(env), fetch_timeout_seconds=0.25),
        api_for=lambda _url: fake_api,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await fake_api.wait_for(lambda: len(fake_api.heartbeats) >= 1)
        assert worker.config.snowflake.node_id == 613
        fake_api.unreachable = ApiUnreachable("connection refused", sent=False)
        fake_api.node_id = 614  # meanwhile the lease lapsed and 613 went to another process
        await fake_api.wait_for(
            lambda: len(fake_api.refused) >= 2 and fake_api.refused[-1][1] - fake_api.refused[0][1] >= 0.5
        )
        fake_api.unreachable = None
        await fake_api.wait_for(lambda: len(fake_api.registrations) == 2)
        assert worker.config.snowflake.node_id == 614
        note = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
        await bus.publish(note)
        await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
        assert {((e.event_id or 0) >> 12) & 0x3FF for e in fake_api.events_of(note.event_id)} == {614}
    finally:
        stop.set()
        await asyncio.wait_for(task, 15.0)


async def test_an_explicit_node_id_is_kept(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    fake_api.node_id = 613
    running = await start_worker()  # config_for sets NOETL_SNOWFLAKE_NODE_ID=7
    note = fake_api.add_command(NOOP, args={"a": 1, "b": 1})
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    assert running.worker.config.snowflake.node_id == 7
    assert {((e.event_id or 0) >> 12) & 0x3FF for e in fake_api.events_of(note.event_id)} == {7}


async def test_an_eager_command_runs_at_once_and_adopts_its_notification(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker()
    first = fake_api.add_command(NOOP, step="first", args={"a": 1, "b": 2})
    slow = [TaskSpec(name="only", kind="python", config={"code": "import time\ntime.sleep(0.5)\nresult = 2"})]
    second = fake_api.add_command(slow, step="second")
    fake_api.eager_next.append(second.event_id)  # the first command's outcome issues the second
    await bus.publish(first)
    await fake_api.wait_for(lambda: fake_api.commands[second.event_id].status == "CLAIMED")
    await bus.publish(second)  # its notification, fetched while it runs here

    await fake_api.wait_for(lambda: fake_api.terminal(second.event_id))
    assert fake_api.eager_requests[0].pool == "shared"
    assert [e.meta for e in fake_api.events_of(second.event_id)] == [
        {"attempt": 1, "command_id": second.command_id}
    ] * 3
    # adopted, not claimed over HTTP; acked once the eager run reported
    assert [c[0] for c in fake_api.claims] == [first.event_id]
    await bus.until(lambda: _is(bus.stream_messages(), 0))


async def test_the_notification_of_an_eager_command_finished_here_is_acked_without_a_claim(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    """The notification of an eager command often arrives after the command finished here: it
    is acked and dropped without a claim (which could only answer 409)."""
    running = await start_worker()
    first = fake_api.add_command(NOOP, step="first", args={"a": 1, "b": 2})
    second = fake_api.add_command(NOOP, step="second", args={"a": 3, "b": 4})
    fake_api.eager_next.append(second.event_id)
    await bus.publish(first)
    await fake_api.wait_for(lambda: fake_api.terminal(second.event_id))
    await bus.until(lambda: _bool(running.worker.in_flight == 0))  # the eager run is over
    dropped_before = sample("commands_total", pool="shared", outcome="finished_here") or 0.0

    await bus.publish(second)  # the notification, after the eager run reported

    await bus.until(lambda: _is(bus.stream_messages(), 0))
    assert sample("commands_total", pool="shared", outcome="finished_here") == dropped_before + 1
    assert [c[0] for c in fake_api.claims] == [first.event_id]
    assert types(fake_api.events_of(second.event_id)) == ["command.started", "call.done", "command.completed"]


async def test_a_redelivered_notification_of_an_eager_command_is_claimed_again(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    """Only the first notification after the eager run is dropped unclaimed: another delivery
    of it goes through the claim as before (finished → 409, acked)."""
    running = await start_worker()
    first = fake_api.add_command(NOOP, step="first", args={"a": 1, "b": 2})
    second = fake_api.add_command(NOOP, step="second", args={"a": 3, "b": 4})
    fake_api.eager_next.append(second.event_id)
    await bus.publish(first)
    await fake_api.wait_for(lambda: fake_api.terminal(second.event_id))
    await bus.until(lambda: _bool(running.worker.in_flight == 0))
    dropped_before = sample("commands_total", pool="shared", outcome="finished_here") or 0.0
    await bus.publish(second)
    await bus.until(
        lambda: _bool(sample("commands_total", pool="shared", outcome="finished_here") == dropped_before + 1)
    )
    await bus.until(lambda: _is(bus.stream_messages(), 0))

    await bus.publish(second)  # the same notification once more

    await fake_api.wait_for(lambda: len(fake_api.claims) == 2)
    await bus.until(lambda: _is(bus.stream_messages(), 0))
    assert [c[0] for c in fake_api.claims] == [first.event_id, second.event_id]
    assert types(fake_api.events_of(second.event_id)) == ["command.started", "call.done", "command.completed"]


async def test_eager_dispatch_can_be_turned_off(
    fake_api: FakeControlPlane, bus: Bus, start_worker: StartWorker
) -> None:
    await start_worker(WORKER_EAGER_DISPATCH="false")
    note = fake_api.add_command(NOOP, step="add", args={"a": 1, "b": 2})
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    assert fake_api.eager_requests == []
