"""Never stranded: the control-api's sweeper through the real suite (docs/sweeper.md).

Its own Stack: a database of its own, a nats-server of its own (the test purges the command
stream) and a control-api told to sweep every half second, to re-publish after 3 s and to
give up on a pool after 15 s. The acceptance test loses a published command notification on
purpose and the execution still completes: the sweeper writes the notification again.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import psycopg
import pytest
from noetl_cli import Api
from noetl_common import COMMANDS_STREAM
from noetl_dev import Stack, create_database
from noetl_dev.testing import recorded_events, wait_for_event, wait_until
from psycopg.rows import dict_row

Conn = psycopg.Connection[dict[str, Any]]
REPUBLISH_SECONDS = 3
POOL_ABSENT_SECONDS = 15

CHAIN = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sweep_chain, path: e2e/sweep_chain}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'n': 1}"}
    next: {spec: {mode: exclusive}, arcs: [{step: end}]}
  - step: end
    tool: {kind: python, code: "result = {'n': 2}"}
"""

NOBODY_SERVES = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sweep_agent, path: e2e/sweep_agent}
workflow:
  - step: start
    tool: {kind: agent, prompt: hi}
"""

DEADLINE = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sweep_deadline, path: e2e/sweep_deadline}
timeout: 2s
workflow:
  - step: start
    tool: {kind: python, code: "import time\\ntime.sleep(60)\\nresult = {}"}
"""


@pytest.fixture(scope="module")
def sweeping(noetl_state_dir: Path, postgres_admin_url: str) -> Iterator[Stack]:
    if os.environ.get("NOETL_E2E_API_URL"):
        pytest.skip("starts its own local Stack and nats-server: NOETL_E2E_API_URL points at a deployment")
    running = Stack(
        noetl_state_dir / f"sweeper-stack-{uuid.uuid4().hex[:6]}",
        database_url=create_database(postgres_admin_url, f"e2e_sweeper_{uuid.uuid4().hex[:10]}"),
        ready_timeout=90.0,
        service_overrides={
            "control-api": {
                "NOETL_SWEEP_INTERVAL_SECONDS": "0.5",
                "NOETL_PENDING_REPUBLISH_SECONDS": str(REPUBLISH_SECONDS),
                "NOETL_POOL_ABSENT_SECONDS": str(POOL_ABSENT_SECONDS),
            }
        },
    )
    running.start()
    try:
        yield running
    finally:
        leftovers = running.stop(grace=10.0)
        assert not leftovers, f"processes left running after stop: {leftovers}"


@pytest.fixture(scope="module")
def api(sweeping: Stack) -> Iterator[Api]:
    with Api(sweeping.api_url, token=sweeping.token) as client:
        for content in (CHAIN, NOBODY_SERVES, DEADLINE):
            client.register(content)
        yield client


@pytest.fixture
def db(sweeping: Stack) -> Iterator[Conn]:
    assert sweeping.database_url is not None
    with psycopg.connect(sweeping.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


async def _purge_commands(nats_url: str) -> int:
    """Drop every message of NOETL_COMMANDS (what a lost node or an operator's purge does)."""
    conn = await nats.connect(nats_url)
    try:
        js = conn.jetstream()
        await js.purge_stream(COMMANDS_STREAM)
        return int((await js.stream_info(COMMANDS_STREAM)).state.messages)
    finally:
        await conn.close()


def _replay_matches(api: Api, execution_id: int) -> None:
    replayed = api.request("GET", f"/api/executions/{execution_id}/replay")
    assert replayed["matches"], replayed["differences"]


def test_a_lost_command_notification_is_published_again_and_the_execution_completes(
    sweeping: Stack, api: Api, db: Conn
) -> None:
    sweeping.stop_service("worker-shared")  # nobody pulls: the published notification waits in the stream
    try:
        execution_id = int(api.execute("e2e/sweep_chain")["execution_id"])
        (command,) = db.execute(
            "SELECT command_id, event_id FROM noetl.command WHERE execution_id = %s", (execution_id,)
        ).fetchall()

        def notification_published() -> bool:
            row = db.execute(
                "SELECT status FROM noetl.outbox WHERE execution_id = %s AND event_id = %s",
                (execution_id, command["command_id"]),
            ).fetchone()
            return row is not None and row["status"] == "PUBLISHED"

        wait_until(notification_published, 30, "the command notification published")
        assert asyncio.run(_purge_commands(sweeping.nats_url or "")) == 0  # lost
    finally:
        sweeping.start_service("worker-shared")

    final = api.wait(execution_id, timeout=60)
    assert final["status"] == "COMPLETED", final
    assert final["results"] == {"start": {"n": 1}, "end": {"n": 2}}
    events = wait_for_event(db, execution_id, "playbook.completed", timeout=30)
    republished = [e for e in events if e["event_type"] == "command.republished"]
    assert republished and {e["step"] for e in republished} == {"start"}
    assert republished[0]["meta"]["command_id"] == command["command_id"]
    completed = [e["step"] for e in events if e["event_type"] == "command.completed"]
    assert sorted(completed) == ["end", "start"]  # each step ran to completion once
    _replay_matches(api, execution_id)


def test_a_step_no_pool_serves_fails_naming_the_pool(api: Api, db: Conn) -> None:
    execution_id = int(api.execute("e2e/sweep_agent")["execution_id"])
    final = api.wait(execution_id, timeout=POOL_ABSENT_SECONDS + 45)
    assert final["status"] == "FAILED", final
    assert final["error"] == (
        f"step 'start' failed: PoolAbsent: no worker of pool 'python' has been alive for {POOL_ABSENT_SECONDS} s"
    )
    wait_for_event(db, execution_id, "playbook.failed", timeout=30)
    _replay_matches(api, execution_id)


def test_an_execution_past_its_playbook_timeout_fails_and_its_step_is_stopped(api: Api, db: Conn) -> None:
    execution_id = int(api.execute("e2e/sweep_deadline")["execution_id"])
    final = api.wait(execution_id, timeout=30)
    assert final["status"] == "FAILED", final
    assert final["error"] == "the playbook timed out: still running after its timeout of 2 s"
    events = wait_for_event(db, execution_id, "playbook.failed", timeout=30)
    (failed,) = [e for e in events if e["event_type"] == "playbook.failed"]
    assert failed["context"]["cause"] == "playbook_timeout"
    # its command was cancelled in the same transaction: the worker's next heartbeat gets 409
    # and stops the step, which never completes
    (command,) = db.execute("SELECT status FROM noetl.command WHERE execution_id = %s", (execution_id,)).fetchall()
    assert command["status"] == "CANCELLED"
    assert not [e for e in recorded_events(db, execution_id) if e["event_type"] == "command.completed"]
    _replay_matches(api, execution_id)
