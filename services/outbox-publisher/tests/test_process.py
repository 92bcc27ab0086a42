"""The ``noetl-outbox-publisher`` process: ops endpoints, no crash-loop, SIGTERM → exit 0."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import nats
from nats.js.api import StreamConfig
from noetl_common import EVENTS_STREAM
from noetl_dev import free_port
from noetl_dev.testing import config_error, get_until, get_when_up, stop_with_sigterm


def _env(nats_url: str, metrics_port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "NATS_URL": nats_url,
            # Nothing listens here: the control-api is down for the whole test.
            "NOETL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
            "NOETL_API_TOKEN": "test-token-for-the-service-0123456789abcdef",
            "PUBLISHER_METRICS_BIND": f"127.0.0.1:{metrics_port}",
            "OUTBOX_MAX_BACKOFF_SECONDS": "0.5",
        }
    )
    return env


def test_serves_ops_while_the_api_is_down_and_exits_zero_on_sigterm(nats_url: str) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "noetl_outbox_publisher"],
        env=_env(nats_url, port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert get_when_up(f"http://127.0.0.1:{port}/healthz").status_code == 200
        # the loop runs against NATS; the API never answers
        ready = get_until(
            f"http://127.0.0.1:{port}/readyz",
            lambda r: bool(r.json().get("streams_ready")),
            15,
            "the loop to run against NATS",
        )
        assert ready.status_code == 503
        assert ready.json() | {"seconds_since_progress": 0} == {
            "status": "not_ready",
            "running": True,
            "streams_ready": True,
            "api_ok": False,
            "nats_connected": True,
            "seconds_since_progress": 0,
        }
        metrics = get_when_up(f"http://127.0.0.1:{port}/metrics").text
        assert "noetl_outbox_publisher_rows_published_total" in metrics
        assert "publisher_stopped" in stop_with_sigterm(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_exits_zero_on_sigterm_while_nats_is_down() -> None:
    port = free_port()
    # Nothing listens on the NATS port: the first connect never completes.
    proc = subprocess.Popen(
        [sys.executable, "-m", "noetl_outbox_publisher"],
        env=_env(f"nats://127.0.0.1:{free_port()}", port),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        ready = get_when_up(f"http://127.0.0.1:{port}/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "not_ready", "nats_connected": False}
        logs = stop_with_sigterm(proc)
        assert "publisher_stopped" in logs and "nats_connected" not in logs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_missing_token_fails_at_start_with_one_line_naming_it(nats_url: str) -> None:
    env = _env(nats_url, free_port())
    del env["NOETL_API_TOKEN"]
    assert config_error([sys.executable, "-m", "noetl_outbox_publisher"], env) == [
        "configuration error: NOETL_API_TOKEN is required: this service's token for the control-api"
    ]


async def _conflicting_events_stream(nats_url: str) -> None:
    """NOETL_EVENTS kept one hour where the publisher declares seven days: unsafe."""
    nc = await nats.connect(nats_url)
    try:
        await nc.jetstream().add_stream(StreamConfig(name=EVENTS_STREAM, subjects=["noetl.events.>"], max_age=3600.0))
    finally:
        await nc.close()


def test_a_stream_with_unsafe_settings_refuses_the_start_and_is_left_alone(nats_url: str) -> None:
    asyncio.run(_conflicting_events_stream(nats_url))
    lines = config_error([sys.executable, "-m", "noetl_outbox_publisher"], _env(nats_url, free_port()))
    assert lines[-1].startswith("configuration error: JetStream stream differs from the declared configuration:")
    assert "NOETL_EVENTS.max_age is 3600.0, declared 604800.0" in lines[-1]
