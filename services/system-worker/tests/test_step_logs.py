"""Step logs on the worker: what a sandboxed python task prints and logs is captured line by
line, bounded (whole lines, a marker for the rest), and scrubbed with the command's secrets
before it leaves with the terminal events. Real zygote and children throughout."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
from noetl_common import CommandSpec, TaskSpec
from noetl_dev.fakes import FakeControlPlane
from noetl_system_worker import (
    PipelineRunner,
    SandboxLimits,
    SandboxPool,
    Worker,
    WorkerConfig,
    default_registry,
)
from noetl_system_worker._python_config import DEFAULT_ENV_ALLOW, PythonSettings
from noetl_system_worker._runtime import ToolRuntime, current_runtime
from noetl_system_worker._step_logs import StepLog
from noetl_system_worker.sandbox import LogLine
from system_worker_bus import Bus

BUDGET = 2048
LIMITS = SandboxLimits(
    cpu_seconds=5, memory_bytes=512 * 1024**2, output_max_bytes=256 * 1024, log_max_bytes=BUDGET
)
PEM = "-----BEGIN RSA PRIVATE KEY-----\nMIIEabcdefghijklmnop\nqrstuvwxyz0123456789\n-----END RSA PRIVATE KEY-----"


@pytest.fixture(scope="module")
async def pool() -> AsyncIterator[SandboxPool]:
    sandbox = SandboxPool(LIMITS, warm=1, env_allow=DEFAULT_ENV_ALLOW, timeout_seconds=60)
    try:
        await sandbox.start()
        yield sandbox
    finally:
        await sandbox.aclose()


def _texts(lines: list[LogLine]) -> list[tuple[str, str | None, str]]:
    return [(line.stream, line.level, line.text) for line in lines]


async def test_stdout_stderr_and_logging_come_back_as_lines_in_order(pool: SandboxPool) -> None:
    code = (
        "import logging, sys\n"
        "print('hello', 'world')\n"
        "print('warn', file=sys.stderr)\n"
        "logging.getLogger('task').info('step %d', 1)\n"
        "logging.warning('two\\nlines')\n"
        "logging.debug('not at the default level')\n"
        "sys.stdout.write('no newline at the end')\n"
        "result = 1"
    )
    before = time.time()

    reply = await pool.run(code, {}, {})

    assert reply.ok and reply.result == 1 and reply.logs_dropped == 0
    assert _texts(reply.logs) == [
        ("stdout", None, "hello world"),
        ("stderr", None, "warn"),
        ("log", "INFO", "step 1"),
        ("log", "WARNING", "two"),
        ("log", "WARNING", "lines"),
        ("stdout", None, "no newline at the end"),
    ]
    assert all(before <= line.at <= time.time() for line in reply.logs)


async def test_a_failing_task_still_reports_what_it_printed(pool: SandboxPool) -> None:
    reply = await pool.run("print('before the error')\nraise ValueError('boom')", {}, {})

    assert not reply.ok and reply.error_type == "ValueError"
    assert _texts(reply.logs) == [("stdout", None, "before the error")]


async def test_output_past_the_budget_is_dropped_in_whole_lines_and_counted(pool: SandboxPool) -> None:
    # 30 lines of 99 characters + newline: 20 fit in 2048 bytes, the 21st does not
    code = "for i in range(30):\n    print(str(i % 10) * 99)\nprint('short, but after the cut')\nresult = 0"

    reply = await pool.run(code, {}, {})

    assert [line.text for line in reply.logs] == [str(i % 10) * 99 for i in range(20)]
    assert reply.logs_dropped == 10 * 99 + len("short, but after the cut")


async def test_one_line_longer_than_the_budget_is_dropped_not_cut(pool: SandboxPool) -> None:
    # unterminated and endless: the child must not hold it, nor keep a piece of it
    code = "import sys\nprint('first')\nfor _ in range(1000):\n    sys.stdout.write('s' * 1000)\nresult = 0"

    reply = await pool.run(code, {}, {})

    assert _texts(reply.logs) == [("stdout", None, "first")]
    assert reply.logs_dropped == 1000 * 1000


async def test_what_cannot_travel_or_be_stored_is_shown_escaped(pool: SandboxPool) -> None:
    reply = await pool.run("print('lone \\udc80 surrogate')\nprint('nul \\x00 char')\nresult = 1", {}, {})
    assert reply.ok, reply.error_message
    log = StepLog()
    log.add(reply.logs, reply.logs_dropped, since=0.0)

    logs = log.wire(1, lambda text: text)

    assert logs is not None
    assert [line.text for line in logs.lines] == ["lone \\udc80 surrogate", "nul \\x00 char"]


async def test_a_reused_child_starts_each_task_with_clean_capture(pool: SandboxPool) -> None:
    first = "import logging\nlogging.getLogger().setLevel(logging.ERROR)\nprint('one')\nresult = 1"
    second = "import logging\nlogging.info('two')\nresult = 2"

    one = await pool.run(first, {}, {}, "playbooks/reuse")
    two = await pool.run(second, {}, {}, "playbooks/reuse")

    assert _texts(one.logs) == [("stdout", None, "one")]
    assert _texts(two.logs) == [("log", "INFO", "two")]


async def test_a_command_log_is_scrubbed_with_its_secrets_and_bounded(pool: SandboxPool) -> None:
    plain = "plain-value-no-pattern-finds"
    runtime = ToolRuntime(step_log=StepLog(BUDGET))
    runtime.remember(plain)
    runner = PipelineRunner(default_registry(sandbox=pool))
    spec = CommandSpec(
        tasks=[
            TaskSpec(name="a", kind="python", config={"code": f"print('the value is', {plain!r})"}),
            TaskSpec(
                name="b", kind="python", config={"code": f"print({PEM!r})\nprint('Bearer ' + 'x' * 30)"}
            ),
            TaskSpec(name="c", kind="python", config={"code": "print('y' * 1500)\nprint('z' * 1500)"}),
        ]
    )
    token = current_runtime.set(runtime)
    try:
        outcome = await runner.run(spec, "s")
    finally:
        current_runtime.reset(token)
    assert outcome.ok

    logs = runtime.step_log.wire(7, runtime.scrub_text)

    assert logs is not None and logs.command_id == 7
    texts = [line.text for line in logs.lines]
    # the remembered value, a multi-line PEM key and a bearer token: none left in any line
    assert texts[0] == "the value is [REDACTED]"
    assert plain not in str(texts) and "MIIE" not in str(texts) and "qrstuvwxyz" not in str(texts)
    assert "x" * 30 not in str(texts) and any("[REDACTED]" in t for t in texts[1:3])
    # task c: the first line fits in what is left of the budget, the second does not
    assert texts[-2] == "y" * 1500
    marker = logs.lines[-1]
    assert marker.truncated and marker.stream == "log" and marker.level == "WARNING"
    assert (
        marker.text.startswith("[1500 more bytes of output dropped")
        and "WORKER_STEP_LOG_MAX_BYTES" in marker.text
    )
    assert not any(line.truncated for line in logs.lines[:-1])


def test_lines_a_child_reports_are_checked_before_they_are_kept() -> None:
    log = StepLog(1024)
    since = time.time()
    log.add(
        [
            LogLine("evil", since, "odd stream", "CRITICAL"),
            LogLine("log", 0.0, "from the past", "I" * 100),
            LogLine("stdout", since + 3600, "from the future", "INFO"),
        ],
        -5,
        since=since,
    )

    logs = log.wire(1, lambda text: text)

    assert logs is not None
    assert [(line.stream, line.level, line.text) for line in logs.lines] == [
        ("stdout", None, "odd stream"),
        ("log", "I" * 16, "from the past"),
        ("stdout", None, "from the future"),
    ]
    # times outside the task's run are the time the worker got them
    assert all(line.at >= time.strftime("%Y-%m-%dT", time.gmtime(since)) for line in logs.lines)
    assert StepLog(1024).wire(1, lambda text: text) is None


def test_the_budget_is_worker_step_log_max_bytes() -> None:
    settings = PythonSettings.from_env({"WORKER_STEP_LOG_MAX_BYTES": "4096"})
    assert settings.limits.log_max_bytes == 4096
    assert PythonSettings.from_env({}).limits.log_max_bytes == 64 * 1024


@pytest.fixture
async def worker(nats_url: str, fake_api: FakeControlPlane, pool: SandboxPool) -> AsyncIterator[Worker]:
    env = {
        "WORKER_ID": "w-logs",
        "NOETL_SERVER_URL": "http://fake-control-api",
        "NOETL_API_TOKEN": "worker-token-for-the-tests-0123456789abcdef",
        "NATS_URL": nats_url,
        "WORKER_HEARTBEAT_INTERVAL": "0.1",
        "WORKER_METRICS_BIND": "127.0.0.1:9999",
    }
    config = dataclasses.replace(WorkerConfig.from_env(env), fetch_timeout_seconds=0.25)
    running = Worker(config, api_for=lambda _url: fake_api, registry=default_registry(config, sandbox=pool))
    stop = asyncio.Event()
    task = asyncio.create_task(running.run(stop))
    await fake_api.wait_for(lambda: bool(fake_api.registrations))
    yield running
    stop.set()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(task, 15.0)


async def test_a_failing_steps_output_goes_with_its_terminal_events_scrubbed(
    fake_api: FakeControlPlane, bus: Bus, worker: Worker
) -> None:
    secret = "pw-very-secret-4711"
    fake_api.credentials["svc"] = {"name": "svc", "credential_type": "generic", "data": {"token": secret}}
    code = "import logging\nprint('using', t)\nlogging.error('failing now')\nraise RuntimeError('no')"
    note = fake_api.add_command(
        [
            TaskSpec(name="cred", kind="secrets", config={"credential": "svc"}),
            TaskSpec(name="t", kind="python", config={"code": code, "args": {"t": "{{ cred.value.token }}"}}),
        ]
    )

    await bus.publish(note)
    await fake_api.wait_for(lambda: fake_api.terminal(note.event_id))

    failed = [e for e in fake_api.events_of(note.event_id) if e.event_type == "command.failed"]
    assert failed and failed[0].context is not None and failed[0].context["error"]["message"] == "no"
    (logs,) = fake_api.logs
    assert logs.command_id == note.command_id
    assert [(line.stream, line.level, line.text) for line in logs.lines] == [
        ("stdout", None, "using [REDACTED]"),
        ("log", "ERROR", "failing now"),
    ]
    # they travelled in the POST of the terminal events, not in one of their own
    (post,) = [p for p in fake_api.posts if any(e.event_type == "command.failed" for e in p)]
    assert post[-1].event_type == "command.failed"
