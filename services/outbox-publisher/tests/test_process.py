"""The ``noetl-outbox-publisher`` process: ops endpoints, no crash-loop, SIGTERM → exit 0."""

from __future__ import annotations

import os
import subprocess
import sys

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
