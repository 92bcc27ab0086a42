"""Poison command notifications: parked in NOETL_DLQ, the command failed, the worker goes on."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
from nats.aio.msg import Msg
from noetl_common import TaskSpec, command_subject, dlq_subject, ensure_consumer, pool_consumer_config
from noetl_dev.fakes import FakeControlPlane, api_error
from noetl_system_worker import Worker, WorkerConfig
from system_worker_bus import Bus

NOOP = [TaskSpec(name="only", kind="python", config={"code": "result = {'sum': a + b}"})]
_unique = itertools.count(7_000_000_000)


def _config(nats_url: str, max_deliver: int) -> WorkerConfig:
    env = {
        "WORKER_ID": "w-dlq",
        "NOETL_SERVER_URL": "http://fake-control-api",
        "NOETL_API_TOKEN": "worker-token-for-the-tests-0123456789abcdef",
        "NATS_URL": nats_url,
        "WORKER_HEARTBEAT_INTERVAL": "0.1",
        "WORKER_METRICS_BIND": "127.0.0.1:9999",
        "NOETL_SNOWFLAKE_NODE_ID": "8",
        "WORKER_NATS_LAG_POLL_INTERVAL": "0.1",
    }
    return dataclasses.replace(
        WorkerConfig.from_env(env), fetch_timeout_seconds=0.25, max_deliver=max_deliver
    )


@pytest.fixture
async def start(nats_url: str, fake_api: FakeControlPlane, bus: Bus) -> AsyncIterator[Callable[[], Any]]:
    """Starts the worker (max_deliver 3) when the test asks."""
    running: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    async def start() -> Worker:
        worker = Worker(_config(nats_url, max_deliver=3), api_for=lambda _url: fake_api)
        stop = asyncio.Event()
        running.append((stop, asyncio.create_task(worker.run(stop))))
        await fake_api.wait_for(lambda: bool(fake_api.registrations))
        return worker

    yield start
    for stop, task in running:
        stop.set()
        await asyncio.wait_for(task, 15.0)


@pytest.fixture
async def worker(start: Callable[[], Any]) -> Worker:
    worker: Worker = await start()
    return worker


async def _dead_letters(bus: Bus, execution_id: int, count: int, timeout: float = 10.0) -> list[Msg]:
    """The messages parked for one execution's subject (waits for ``count`` of them)."""
    sub = await bus.js.pull_subscribe(
        dlq_subject(command_subject("shared", execution_id)), stream="NOETL_DLQ"
    )
    try:
        got: list[Msg] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(got) < count and asyncio.get_running_loop().time() < deadline:
            with contextlib.suppress(asyncio.TimeoutError):
                got += await sub.fetch(count - len(got), timeout=0.5)
        return got
    finally:
        await sub.unsubscribe()


async def _is(value: Any, expected: Any) -> bool:
    return await value == expected


def _note_on(fake_api: FakeControlPlane, execution_id: int) -> Any:
    note = fake_api.add_command(NOOP, args={"a": 1, "b": 2})
    fake_api.commands[note.event_id].execution_id = execution_id
    return msgspec.structs.replace(note, execution_id=execution_id)


async def test_past_max_deliver_the_command_is_failed_and_parked(
    fake_api: FakeControlPlane, bus: Bus, start: Callable[[], Any]
) -> None:
    execution_id = next(_unique)
    note = _note_on(fake_api, execution_id)
    await ensure_consumer(bus.js, "NOETL_COMMANDS", pool_consumer_config("shared", max_deliver=3))
    await bus.js.publish(command_subject("shared", execution_id), msgspec.json.encode(note))
    # two workers took it and gave it back without an answer (died, or released it at a stop)
    for _ in range(2):
        taken = await bus.fetch_one()
        await taken.nak()
    await start()  # the 3rd delivery is the last allowed: not run, failed and parked
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    assert fake_api.claims == []
    ((event_id, reason, worker_id),) = fake_api.failed
    assert event_id == note.event_id and worker_id == "w-dlq"
    assert "delivered 3 times (max_deliver 3)" in reason
    (parked,) = await _dead_letters(bus, execution_id, 1)
    assert parked.data == msgspec.json.encode(note)
    assert parked.headers is not None
    assert parked.headers["Noetl-Original-Subject"] == command_subject("shared", execution_id)
    assert parked.headers["Noetl-Reason"] == "max_deliver"
    assert "max_deliver 3" in parked.headers["Noetl-Error"]
    await bus.until(lambda: _is(bus.consumer(), (0, 0)))
    # and processing goes on
    after = _note_on(fake_api, next(_unique))
    await bus.js.publish(command_subject("shared", after.execution_id), msgspec.json.encode(after))
    await fake_api.wait_for(lambda: fake_api.terminal(after.event_id))
    assert fake_api.commands[after.event_id].status == "COMPLETED"


async def test_a_claim_the_api_refuses_as_invalid_is_parked_and_a_refused_credential_is_not(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker
) -> None:
    """A 4xx about the command (here a 403 naming its pool: a message on the wrong pool's
    subject) is poison; a 401 or a 403 about this worker's own credential is not the message's
    fault: it is held and claimed again, as while the API is down."""
    wrong, held = next(_unique), next(_unique)
    misrouted = _note_on(fake_api, wrong)
    fake_api.claim_errors[misrouted.event_id] = [api_error(403, "forbidden", extra={"pool": "system"})]
    kept = _note_on(fake_api, held)
    fake_api.claim_errors[kept.event_id] = [api_error(401, "unauthenticated"), api_error(403, "forbidden")]
    await bus.js.publish(command_subject("shared", wrong), msgspec.json.encode(misrouted))
    await bus.js.publish(command_subject("shared", held), msgspec.json.encode(kept))

    (parked,) = await _dead_letters(bus, wrong, 1)
    assert parked.headers is not None and parked.headers["Noetl-Reason"] == "refused"
    assert "claim refused: HTTP 403" in parked.headers["Noetl-Error"]
    assert [f[0] for f in fake_api.failed] == [misrouted.event_id]
    await fake_api.wait_for(lambda: fake_api.terminal(kept.event_id))
    assert fake_api.commands[kept.event_id].status == "COMPLETED"
    assert [c[0] for c in fake_api.claims].count(kept.event_id) == 3
    await bus.until(lambda: _is(bus.consumer(), (0, 0)))
    assert await _dead_letters(bus, held, 1, timeout=0.5) == []


async def test_undecodable_notifications_are_parked_and_a_named_command_is_failed(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker
) -> None:
    garbage_execution, named_execution = next(_unique), next(_unique)
    await bus.js.publish(command_subject("shared", garbage_execution), b"\xff{not json")
    note = _note_on(fake_api, named_execution)
    # valid JSON naming a command, but not a notification (step missing, a field of the wrong type)
    broken = {"event_id": note.event_id, "execution_id": "x", "server_url": "http://elsewhere"}
    await bus.js.publish(command_subject("shared", named_execution), msgspec.json.encode(broken))
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    ((event_id, reason, _),) = fake_api.failed
    assert event_id == note.event_id and reason.startswith("undecodable command notification")
    (garbage,) = await _dead_letters(bus, garbage_execution, 1)
    assert garbage.data == b"\xff{not json" and garbage.headers is not None
    assert garbage.headers["Noetl-Reason"] == "undecodable"
    (named,) = await _dead_letters(bus, named_execution, 1)
    assert msgspec.json.decode(named.data) == broken
    await bus.until(lambda: _is(bus.consumer(), (0, 0)))
    assert fake_api.claims == []


async def test_a_dead_letter_candidate_that_finished_meanwhile_is_only_acked(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker
) -> None:
    execution_id = next(_unique)
    note = _note_on(fake_api, execution_id)
    real_claim = fake_api.claim_command

    async def claim(event_id: int, worker_id: str) -> Any:
        """The lease is held twice; while the 2nd claim waits, its holder reports the command."""
        if len(fake_api.claims) == 1:
            fake_api.commands[event_id].status = "COMPLETED"
        if len(fake_api.claims) < 2:
            fake_api.claims.append((event_id, worker_id, 0.0))
            raise api_error(429, "lease_held", retry_after=0.1)
        return await real_claim(event_id, worker_id)

    fake_api.claim_command = claim  # type: ignore[method-assign]
    await bus.js.publish(command_subject("shared", execution_id), msgspec.json.encode(note))
    await bus.until(lambda: _is(bus.consumer(), (0, 0)))
    assert fake_api.failed == []
    assert await _dead_letters(bus, execution_id, 1, timeout=1.0) == []
