"""The ``noetl-control-api`` command: config errors exit 2 with one line; ``migrate`` applies."""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import psycopg

PUBLISHER_TOKEN = "publisher-token-for-the-cli-tests-0123456789"
ADMIN_TOKEN = "admin-token-for-the-cli-tests-0123456789abcd"
ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("NOETL_")}
    return subprocess.run(
        [sys.executable, "-m", "noetl_control_api", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_database_url_exits_2_naming_the_variable() -> None:
    result = _run(["migrate"], {})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "NOETL_DATABASE_URL" in lines[0]


def test_bad_setting_exits_2_naming_the_variable(database_url: str) -> None:
    for name, value in (
        ("NOETL_API_BIND", "nonsense"),
        ("NOETL_COMMAND_CLAIM_LEASE_SECONDS", "soon"),
        ("NOETL_EVENT_SHARD_COUNT", "0"),
        ("NOETL_LOG_LEVEL", "LOUD"),
        ("NOETL_EVENT_LOOP", "tokio"),
        ("NOETL_ADMIN_TOKEN", "short"),
        ("NOETL_INTERNAL_API_TOKEN", "the-one-token-every-service-used-to-share"),
        ("NOETL_OIDC_ISSUER", "https://issuer.example"),
    ):
        result = _run(["serve"], {"NOETL_DATABASE_URL": database_url, name: value})
        assert result.returncode == 2, (name, result.stderr)
        assert name in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_migrate_applies_and_exits(database_url: str) -> None:
    result = _run(["migrate"], {"NOETL_DATABASE_URL": database_url})
    assert result.returncode == 0, result.stderr
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM noetl.schema_migrations").fetchone()[0] >= 1  # type: ignore[index]
    assert _run(["migrate"], {"NOETL_DATABASE_URL": database_url}).returncode == 0


@contextlib.contextmanager
def _serving(database_url: str, **extra: str) -> Iterator[tuple[subprocess.Popen[str], str, list[str]]]:
    """Run ``noetl-control-api serve``; yields (process, base URL, stderr lines so far)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if not k.startswith("NOETL_")}
    env = {**base, "NOETL_DATABASE_URL": database_url, "NOETL_API_BIND": f"127.0.0.1:{port}", **extra}
    proc = subprocess.Popen(
        [sys.executable, "-m", "noetl_control_api", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines: list[str] = []
        # uvicorn logs "Application startup complete" once the app's lifespan has run
        for line in proc.stderr:
            lines.append(line)
            if "Application startup complete" in line:
                break
        else:
            raise AssertionError("".join(lines))
        yield proc, f"http://127.0.0.1:{port}", lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_answers_and_stops_cleanly_on_sigterm(database_url: str) -> None:
    with _serving(database_url) as (proc, url, lines):
        ready = httpx.get(f"{url}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        internal = httpx.get(f"{url}/api/internal/outbox/pending-count", timeout=5)
        assert internal.status_code == 401  # no credential
        assert internal.json()["error"] == "unauthenticated"
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as conn:
            conn.sendall(b"GET /readyz HTTP/1.1\r\nhost: x\r\nx-big: " + b"a" * 70_000 + b"\r\n\r\n")
            assert conn.recv(64).startswith(b"HTTP/1.1 431 ")  # served by the bounded protocol
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert all(line.startswith("{") for line in lines)  # JSON lines only


def test_sigterm_releases_a_parked_long_poll(database_url: str) -> None:
    with _serving(database_url, NOETL_PUBLISHER_TOKEN=PUBLISHER_TOKEN) as (proc, url, _lines):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            poll = pool.submit(
                httpx.post,
                f"{url}/api/internal/outbox/claim",
                json={"limit": 10, "wait_ms": 60_000},
                headers={"authorization": f"Bearer {PUBLISHER_TOKEN}"},
                timeout=90,
            )
            deadline = time.monotonic() + 20
            # wait for the condition (one parked claim), not for a guessed time
            while "noetl_control_api_outbox_claim_waiters 1.0" not in httpx.get(f"{url}/metrics").text:
                assert time.monotonic() < deadline and not poll.done()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            reply = poll.result(timeout=10)
        assert reply.status_code == 200 and reply.json() == {"rows": [], "claimed": 0, "marked": 0}


def _running_execution(url: str) -> int:
    """Register and start a one-step playbook; with no worker it stays RUNNING."""
    playbook = (
        "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: held, path: tests/held}\n"
        'workflow:\n  - step: start\n    tool: {kind: python, code: "result = 1"}\n'
    )
    registered = httpx.post(f"{url}/api/catalog/register", json={"content": playbook}, headers=ADMIN)
    assert registered.status_code == 201
    started = httpx.post(f"{url}/api/execute", json={"path": "tests/held"}, headers=ADMIN)
    return int(started.json()["execution_id"])


def test_sigterm_releases_a_held_execution_read(database_url: str) -> None:
    with _serving(database_url, NOETL_ADMIN_TOKEN=ADMIN_TOKEN) as (proc, url, _lines):
        execution_id = _running_execution(url)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(
                httpx.get, f"{url}/api/executions/{execution_id}?wait=60", headers=ADMIN, timeout=90
            )
            deadline = time.monotonic() + 20
            while "noetl_control_api_execution_waiters 1.0" not in httpx.get(f"{url}/metrics").text:
                assert time.monotonic() < deadline and not held.done()
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
            reply = held.result(timeout=10)
        assert reply.status_code == 200 and reply.json()["status"] == "RUNNING"


def test_sigterm_cuts_an_open_event_stream_after_the_grace(database_url: str) -> None:
    """A stream of a RUNNING execution never ends by itself: after SIGTERM it is cancelled once
    NOETL_API_SHUTDOWN_GRACE_SECONDS pass, and the process still exits 0 with JSON log lines."""
    extra = {"NOETL_ADMIN_TOKEN": ADMIN_TOKEN, "NOETL_API_SHUTDOWN_GRACE_SECONDS": "1"}
    with _serving(database_url, **extra) as (proc, url, lines):
        execution_id = _running_execution(url)
        stream_url = f"{url}/api/executions/{execution_id}/stream"
        with httpx.stream("GET", stream_url, headers=ADMIN, timeout=60) as stream:
            assert stream.status_code == 200
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        assert proc.stderr is not None
        lines += proc.stderr.readlines()
    assert any("Shutting down" in line for line in lines)
    assert all(line.startswith("{") for line in lines), [line for line in lines if not line.startswith("{")]
