"""Live progress and replay through the real stack: the SSE stream, ``noetl execute --watch``,
``noetl replay``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
from conformance_support import TERMINAL_EVENTS, finish
from noetl_cli import Api
from noetl_dev import Stack

Conn = psycopg.Connection[dict[str, Any]]
REPO = Path(__file__).resolve().parents[2]


def _sse(
    stack: Stack, execution_id: int, headers: dict[str, str] | None = None
) -> tuple[str, list[dict[str, Any]]]:
    """Read the whole stream (it must end by itself); (content type, [(id, event)])."""
    events: list[dict[str, Any]] = []
    url = f"{stack.api_url}/api/executions/{execution_id}/stream"
    with httpx.stream(
        "GET", url, headers={**stack.auth(), **(headers or {})}, timeout=httpx.Timeout(10.0, read=60.0)
    ) as response:
        assert response.status_code == 200, response.read()
        content_type = response.headers["content-type"]
        frame: dict[str, str] = {}
        for line in response.iter_lines():
            if line == "":
                if "data" in frame:
                    event = json.loads(frame["data"])
                    assert frame["id"] == str(event["event_id"])
                    events.append(event)
                frame = {}
            elif not line.startswith(":"):
                key, _, value = line.partition(":")
                frame[key] = value.removeprefix(" ")
    return content_type, events


def test_stream_follows_an_execution_to_its_terminal_event(api: Api, db: Conn, stack: Stack) -> None:
    eid = int(api.execute("conformance/own/loops")["execution_id"])
    content_type, streamed = _sse(stack, eid)  # opened while it runs; ends after the terminal event

    assert content_type.startswith("text/event-stream")
    ids = [e["event_id"] for e in streamed]  # projection order: a worker's id may be older
    assert len(set(ids)) == len(ids)
    assert streamed[0]["event_type"] == "playbook.execution_requested"
    assert streamed[-1]["event_type"] == "playbook.completed"
    assert [e for e in streamed if e["event_type"] in TERMINAL_EVENTS] == streamed[-1:]
    finish(api, db, eid)
    assert sorted(e["event_id"] for e in api.events(eid)) == sorted(ids)  # the read model, whole

    # resumable: from Last-Event-ID on, exactly the rest
    _, rest = _sse(stack, eid, {"Last-Event-ID": str(ids[4])})
    assert [e["event_id"] for e in rest] == ids[5:]
    # resuming after the terminal event ends at once
    _, none = _sse(stack, eid, {"Last-Event-ID": str(ids[-1])})
    assert none == []


def test_stream_of_an_unknown_execution_is_404(stack: Stack) -> None:
    reply = httpx.get(f"{stack.api_url}/api/executions/1234567/stream", headers=stack.auth(), timeout=10)
    assert reply.status_code == 404
    bad = httpx.get(
        f"{stack.api_url}/api/executions/1/stream", headers={**stack.auth(), "Last-Event-ID": "x"}, timeout=10
    )
    assert bad.status_code in (400, 404, 422)


def _cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noetl_cli", "--server", stack.api_url, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
        env={**os.environ, "NOETL_API_TOKEN": stack.token},
    )


def test_execute_watch_prints_steps_and_exits_with_the_status(api: Api, stack: Stack) -> None:
    done = _cli(stack, "execute", "conformance/own/pipeline_rules", "--watch", "--timeout", "60")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[-1].startswith("COMPLETED execution ")
    for step in ("start", "breaking", "end"):
        assert any(f"✓ {step} " in line and "completed" in line for line in lines), done.stdout
    assert not [line for line in lines if "\x1b[" in line]  # not a TTY: plain lines

    failed = _cli(stack, "execute", "conformance/own/tool_exception", "--watch", "--timeout", "60")
    assert failed.returncode == 3, failed.stderr
    assert any("✗ boom " in line and "no such thing" in line for line in failed.stdout.splitlines()), (
        failed.stdout
    )
    assert failed.stdout.splitlines()[-1].startswith("FAILED execution ")


def test_replay_command_reports_a_match(api: Api, db: Conn, stack: Stack) -> None:
    eid = int(api.execute("conformance/own/routing")["execution_id"])
    finish(api, db, eid)
    done = _cli(stack, "replay", str(eid))
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "replayed state == stored state" in done.stdout
    as_json = json.loads(_cli(stack, "replay", str(eid), "--json").stdout)
    assert as_json["matches"] is True and as_json["replayed"]["status"] == "COMPLETED"
    assert as_json["replayed"]["results"]["join"]["seen"] in (["a", "b"], ["b", "a"])
