"""Worker reporting: big results go to the result store, credentials are resolved at dispatch,
and secret values never appear in the events it sends (real nats-server, fake control-api)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from noetl_common import Rule, TaskSpec
from noetl_common.results import ARROW_MEDIA_TYPE, JSON_MEDIA_TYPE, decode_result
from noetl_dev.fakes import FakeControlPlane, api_error
from noetl_system_worker import Worker, WorkerConfig
from system_worker_bus import Bus

SECRET = "pw-very-secret-4711"


@pytest.fixture
async def worker(nats_url: str, fake_api: FakeControlPlane) -> AsyncIterator[Worker]:
    env = {
        "WORKER_ID": "w-results",
        "NOETL_SERVER_URL": "http://fake-control-api",
        "NOETL_API_TOKEN": "worker-token-for-the-tests-0123456789abcdef",
        "NATS_URL": nats_url,
        "WORKER_HEARTBEAT_INTERVAL": "0.1",
        "WORKER_METRICS_BIND": "127.0.0.1:9999",
        "NOETL_KEYCHAIN_ENV_VARS": "RESULTS_TEST_TOKEN",
        "NOETL_EVENT_RESULT_CONTEXT_MAX_BYTES": "4096",
    }
    config = dataclasses.replace(WorkerConfig.from_env(env), fetch_timeout_seconds=0.25)
    running = Worker(config, api_for=lambda _url: fake_api)
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    await fake_api.wait_for(lambda: bool(fake_api.registrations))
    yield running
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 15.0)


async def run(fake_api: FakeControlPlane, bus: Bus, tasks: list[TaskSpec]) -> dict[str, Any]:
    note = fake_api.add_command(tasks)
    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))
    events = fake_api.events_of(note.event_id)
    return {e.event_type: e for e in events} | {"_all": events, "_note": note}


def py(code: str, **config: Any) -> TaskSpec:
    return TaskSpec(name="t", kind="python", config={"code": code, **config})


async def test_a_big_tabular_result_is_stored_as_arrow_and_referenced(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker
) -> None:
    code = "result = [{'id': i, 'name': 'user-' + str(i), 'score': i * 0.5} for i in range(400)]"

    got = await run(fake_api, bus, [py(code)])

    done = got["command.completed"].context
    ref = done["result"]["$ref"]
    assert ref["store"] == "noetl.result" and ref["media_type"] == ARROW_MEDIA_TYPE
    assert ref["key"].startswith(f"{got['_note'].execution_id}/")
    data, media = fake_api.results[ref["key"]]
    assert media == ARROW_MEDIA_TYPE and ref["size"] == len(data)
    rows = decode_result(data, media)
    assert len(rows) == 400 and rows[3] == {"id": 3, "name": "user-3", "score": 1.5}
    assert got["call.done"].context == {"result": done["result"]}
    assert len(msgspec.json.encode(done)) < 4096


async def test_a_big_document_is_stored_as_json_and_a_small_one_inline(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker
) -> None:
    big = await run(fake_api, bus, [py("result = {'blob': 'x' * 10000, 'nested': {'a': [1, 2]}}")])
    small = await run(fake_api, bus, [py("result = {'n': 1}")])

    ref = big["command.completed"].context["result"]["$ref"]
    data, media = fake_api.results[ref["key"]]
    assert media == JSON_MEDIA_TYPE and decode_result(data, media)["nested"] == {"a": [1, 2]}
    assert small["command.completed"].context == {"result": {"n": 1}}
    assert len(fake_api.results) == 1


async def test_credentials_resolve_at_dispatch_and_secrets_never_reach_events(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESULTS_TEST_TOKEN", "env-token-31337")
    fake_api.credentials["svc"] = {
        "name": "svc",
        "credential_type": "generic",
        "data": {"user": "svc-user", "password": SECRET},
    }
    tasks = [
        TaskSpec(name="cred", kind="secrets", config={"credential": "svc"}),
        TaskSpec(name="tok", kind="secrets", config={"env": "RESULTS_TEST_TOKEN"}),
        py(
            "result = {'joined': pw + '|' + tok, 'user': user, 'echo': 'pw=' + pw}",
            args={
                "pw": "{{ cred.value.password }}",
                "user": "{{ cred.value.user }}",
                "tok": "{{ tok.value }}",
            },
        ),
    ]

    got = await run(fake_api, bus, tasks)

    posted = msgspec.json.encode([e for e in got["_all"]]).decode()
    assert SECRET not in posted and "env-token-31337" not in posted
    result = got["command.completed"].context["result"]
    # everything a secrets task reads is secret, the user name included
    assert result == {"joined": "[REDACTED]|[REDACTED]", "user": "[REDACTED]", "echo": "pw=[REDACTED]"}
    assert fake_api.resolved == [(["svc"], got["_note"].execution_id)]


async def test_an_error_that_quotes_a_secret_is_redacted(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker
) -> None:
    fake_api.credentials["svc"] = {"name": "svc", "credential_type": "generic", "data": {"token": SECRET}}
    tasks = [
        TaskSpec(name="cred", kind="secrets", config={"credential": "svc"}),
        py("raise RuntimeError('bad token ' + t)", args={"t": "{{ cred.value.token }}"}),
    ]

    got = await run(fake_api, bus, tasks)

    error = got["command.failed"].context["error"]
    assert error["message"] == "bad token [REDACTED]"
    assert SECRET not in msgspec.json.encode(got["_all"]).decode()


async def test_an_unknown_credential_fails_the_step(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker
) -> None:
    got = await run(
        fake_api, bus, [TaskSpec(name="q", kind="postgres", config={"auth": "nope", "query": "x"})]
    )

    error = got["command.failed"].context["error"]
    assert error["type"] == "CredentialError" and "nope" in error["message"]


async def test_a_result_the_store_refuses_fails_the_step(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker
) -> None:
    async def refuse(execution_id: int, data: bytes, media_type: str) -> dict[str, Any]:
        raise api_error(413, "payload_too_large")

    fake_api.put_result = refuse  # type: ignore[method-assign]

    got = await run(fake_api, bus, [py("result = {'blob': 'x' * 10000}")])

    error = got["command.failed"].context["error"]
    assert error["type"] == "ResultStoreError" and "413" in error["message"]
    assert "command.completed" not in got


async def test_a_big_set_value_is_stored_and_iter_writes_stay_in_the_worker(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker
) -> None:
    rule = Rule(
        when=None,
        do="continue",
        set={"ctx.big": "{{ output.data.blob }}", "ctx.small": 1, "iter.local": "{{ output.data.blob }}"},
    )
    task = TaskSpec(
        name="t", kind="python", config={"code": "result = {'blob': 'y' * 8000, 'n': 1}"}, rules=[rule]
    )

    got = await run(fake_api, bus, [task])

    context = got["command.completed"].context
    assert set(context["set"]) == {"ctx.big", "ctx.small"}
    ref = context["set"]["ctx.big"]["$ref"]
    assert decode_result(*fake_api.results[ref["key"]]) == "y" * 8000
    assert context["set"]["ctx.small"] == 1
    # the result went first (the biggest piece), then the set value
    assert "$ref" in context["result"] and len(fake_api.results) == 2
    assert len(msgspec.json.encode(context)) < 4096
