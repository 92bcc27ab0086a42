"""The real program: ops endpoints, readiness, SIGTERM exits 0, bad config exits 2."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import nats
from nats.js.api import StreamConfig
from noetl_common import COMMANDS_STREAM


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def worker_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WORKER_", "NATS_", "NOETL_"))}
    env["NOETL_API_TOKEN"] = "worker-token-for-the-tests-0123456789abcdef"
    env.update(extra)
    return env


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> httpx.Response:
    """Poll /readyz until 200 (bounded); fail early if the process died."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"worker exited early with {proc.returncode}"
        try:
            response = httpx.get(url, timeout=1.0)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "worker never became ready"
        time.sleep(0.05)


def test_serves_ops_endpoints_and_stops_on_sigterm(nats_url: str) -> None:
    port = free_port()
    env = worker_env(
        NATS_URL=nats_url,
        NOETL_SERVER_URL=f"http://127.0.0.1:{free_port()}",  # nothing listens: registration retries
        WORKER_METRICS_BIND=f"127.0.0.1:{port}",
        WORKER_POOL_NAME="system",
        WORKER_ID="proc-worker",
        WORKER_HEARTBEAT_INTERVAL="0.2",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "noetl_system_worker"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        ready = wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        body = ready.json()
        assert body["status"] == "ready" and body["pool"] == "system" and body["worker_id"] == "proc-worker"
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics").text
        for name in ("in_flight", "commands_total", "dispatch_duration_seconds"):
            assert f"noetl_system_worker_{name}" in metrics

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    logs = proc.stderr.read().decode() if proc.stderr else ""
    assert '"worker_started"' in logs and '"worker_stopped"' in logs
    # python tasks get a sandbox by default; its zygote does not outlive the worker
    sandbox = next(json.loads(line) for line in logs.splitlines() if '"python_sandbox_started"' in line)
    assert sandbox["process"].startswith("on") and not os.path.exists(f"/proc/{sandbox['zygote_pid']}")


def test_bad_config_exits_2_with_one_line_naming_the_variable() -> None:
    env = worker_env(NOETL_SERVER_URL="http://127.0.0.1:1", WORKER_POOL_NAME="gpu")
    result = subprocess.run(
        [sys.executable, "-m", "noetl_system_worker"], env=env, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 2
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "WORKER_POOL_NAME" in lines[0]


async def _conflicting_commands_stream(nats_url: str) -> None:
    """NOETL_COMMANDS with limits retention where a work queue is declared: unsafe."""
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(
            StreamConfig(name=COMMANDS_STREAM, subjects=["noetl.commands", "noetl.commands.>"])
        )
    finally:
        await nc.close()


def test_a_stream_with_unsafe_settings_refuses_the_start(nats_url: str) -> None:
    asyncio.run(_conflicting_commands_stream(nats_url))
    env = worker_env(
        NATS_URL=nats_url,
        NOETL_SERVER_URL=f"http://127.0.0.1:{free_port()}",
        WORKER_METRICS_BIND=f"127.0.0.1:{free_port()}",
        WORKER_PYTHON_ISOLATION="thread",
    )
    result = subprocess.run(
        [sys.executable, "-m", "noetl_system_worker"], env=env, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 2
    last = result.stderr.decode().strip().splitlines()[-1]
    assert last.startswith("configuration error: JetStream stream differs from the declared configuration:")
    assert "NOETL_COMMANDS.retention is 'limits', declared 'workqueue'" in last
