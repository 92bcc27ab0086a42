"""The ``noetl`` CLI against the live stack: every subcommand and the ``--wait`` exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from noetl_cli import Api
from noetl_dev.testing import wait_for_event, wait_until

REPO = Path(__file__).resolve().parents[2]
Conn = psycopg.Connection[dict[str, Any]]


def test_register_list_execute_status_events(cli: Callable[..., Any], db: Conn) -> None:
    registered = cli("catalog", "register", "examples/hello.yaml", "examples/")
    assert registered.code == 0, registered.stderr
    assert "registered examples/hello" in registered.stdout

    listed = cli("catalog", "list", "--json")
    assert listed.code == 0
    assert {"examples/hello", "examples/branch"} <= {e["path"] for e in json.loads(listed.stdout)}

    started = cli("execute", "examples/hello")
    assert started.code == 0, started.stderr
    execution_id = int(json.loads(started.stdout)["execution_id"])
    wait_for_event(db, execution_id, "playbook.completed", timeout=60)

    status = cli("status", str(execution_id))
    assert status.code == 0
    assert json.loads(status.stdout)["status"] == "COMPLETED"

    events = cli("events", str(execution_id), "--json")
    assert events.code == 0
    types = [json.loads(line)["event_type"] for line in events.stdout.splitlines()]
    assert types[-1] == "playbook.completed"
    assert types.count("command.completed") == 3

    table = cli("events", str(execution_id))
    assert table.stdout.splitlines()[0].split() == ["EVENT_ID", "CREATED_AT", "TYPE", "STEP", "STATUS"]


def test_execute_a_playbook_file_registers_it_first(cli: Callable[..., Any]) -> None:
    done = cli("execute", "examples/branch.yaml", "--wait", "--payload", '{"amount": 1}')
    assert done.code == 0, done.stderr
    final = json.loads(done.stdout)
    assert final["status"] == "COMPLETED"
    assert '"route": "small"' in json.dumps(final["result"])


def test_wait_timeout_exits_5_and_prints_the_running_state(cli: Callable[..., Any], api: Api) -> None:
    done = cli("execute", "e2e/slow", "--payload", '{"seconds": 2}', "--wait", "--timeout", "0.2")

    assert done.code == 5, (done.stdout, done.stderr)
    last = json.loads(done.stdout)
    assert last["status"] == "RUNNING"
    assert "still RUNNING" in done.stderr
    assert api.wait(last["execution_id"], timeout=60)["status"] == "COMPLETED"


def test_a_cancelled_execution_exits_4(api_url: str, api: Api, api_token: str) -> None:
    before = {e["execution_id"] for e in api.executions(path="e2e/slow")}
    argv = ["execute", "e2e/slow", "--payload", '{"seconds": 3}', "--wait", "--timeout", "60"]
    waiting = subprocess.Popen(
        [sys.executable, "-m", "noetl_cli", "--server", api_url, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "NOETL_API_TOKEN": api_token},
    )
    try:
        new = wait_until(
            lambda: [e for e in api.executions(path="e2e/slow") if e["execution_id"] not in before],
            timeout=30,
            message="the CLI's execution to appear",
        )
        api.cancel(new[0]["execution_id"])
        out, err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.wait()
    assert waiting.returncode == 4, (out, err)
    assert json.loads(out)["status"] == "CANCELLED"
