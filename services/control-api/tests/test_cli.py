"""The ``noetl-control-api`` command: config errors exit 2 with one line; ``migrate`` applies."""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg


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


def test_serve_answers_and_stops_cleanly_on_sigterm(database_url: str) -> None:
    import signal
    import socket

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    base = {k: v for k, v in os.environ.items() if not k.startswith("NOETL_")}
    env = {**base, "NOETL_DATABASE_URL": database_url, "NOETL_API_BIND": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "noetl_control_api", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        lines = []
        # the worker logs "Started worker-1" once the app's lifespan has run
        for line in proc.stderr:
            lines.append(line)
            if "Started worker" in line:
                break
        else:
            raise AssertionError("".join(lines))
        ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        internal = httpx.get(f"http://127.0.0.1:{port}/api/internal/outbox/pending-count", timeout=5)
        assert internal.status_code == 503  # no token configured
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert all(line.startswith("{") for line in lines)  # JSON lines only
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
