"""`noetl-dev up --cluster`: three JetStream servers, two control-api replicas, two projector shards,
and executions that still complete once a NATS server and an API replica are gone for good."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from noetl_cli import Api
from noetl_dev import free_port, read_state
from noetl_dev._cluster import NatsNode, replica_of, stop_order
from noetl_dev._pgroup import group_members, is_running
from noetl_dev.testing import wait_until

REPO = Path(__file__).resolve().parents[3]
SERVICES = {
    "control-api",
    "control-api-2",
    "outbox-publisher",
    "projector",
    "projector-2",
    "worker-shared",
    "worker-system",
}
NATS_NODES = {"nats-1", "nats-2", "nats-3"}


def _dev(state_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "noetl_dev", "--state-dir", str(state_dir), "--grace", "10", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _streams(monitor_port: int) -> dict[str, dict[str, Any]]:
    """The streams one server holds, from its monitoring port: name -> config and cluster info."""
    reply = httpx.get(f"http://127.0.0.1:{monitor_port}/jsz", params={"streams": "true", "config": "true"})
    reply.raise_for_status()
    return {
        stream["name"]: stream
        for account in reply.json().get("account_details", [])
        for stream in account.get("stream_detail", [])
    }


def test_replicas_stop_with_what_they_are_a_copy_of() -> None:
    waves = (("worker-shared", "projector"), ("control-api",), ("nats",), ("postgres",))
    names = ["nats-2", "control-api-2", "worker-shared-3", "projector-2", "postgres", "nats", "odd"]
    assert stop_order(names, waves) == [
        ("worker-shared-3", "projector-2", "odd"),
        ("control-api-2",),
        ("nats-2", "nats"),
        ("postgres",),
    ]
    assert replica_of("worker-shared") == "worker-shared" and replica_of("nats-12") == "nats"


def test_a_node_configuration_keeps_both_logins_off_the_command_line(tmp_path: Path) -> None:
    nodes = [
        NatsNode(f"nats-{i}", free_port(), free_port(), free_port(), tmp_path / f"nats-{i}", tmp_path / "log")
        for i in (1, 2)
    ]
    nodes[0].write_config(nodes, ("noetl", "client-secret"), ("route", "route-secret"))
    text = nodes[0].config_path.read_text()
    assert nodes[0].config_path.stat().st_mode & 0o077 == 0
    assert "client-secret" in text and f"nats-route://route:route-secret@127.0.0.1:{nodes[1].route_port}" in text
    assert f"127.0.0.1:{nodes[0].route_port}" in text and "nats-1" in text
    assert not any("secret" in arg for arg in nodes[0].argv)


@pytest.fixture
def state_dir(noetl_state_dir: Path) -> Path:
    return noetl_state_dir / "dev-cluster"


def test_up_cluster_survives_a_lost_nats_server_and_a_lost_api_replica(state_dir: Path) -> None:
    up = _dev(state_dir, "up", "--cluster", "--api-port", str(free_port()), "--examples", str(REPO / "examples"))
    state = read_state(state_dir)
    processes = state["processes"] if state else {}
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert state is not None
        assert "examples/hello: execution" in up.stdout and "COMPLETED" in up.stdout
        assert set(processes) == {"postgres", *NATS_NODES, *SERVICES}
        status = _dev(state_dir, "status")
        assert status.returncode == 0 and status.stdout.count("readyz 200") == len(NATS_NODES | SERVICES)

        # every service is told every NATS server and every API replica; the shards agree
        api_urls = state["api_urls"]
        assert len(api_urls) == 2
        for name in SERVICES:
            env = processes[name]["env"]
            assert env["NOETL_SERVER_URL"] == ",".join(api_urls)
            assert len(env["NATS_URL"].split(",")) == 3
            assert env["NOETL_EVENT_SHARD_COUNT"] == "2" and env["NOETL_STREAM_REPLICAS"] == "3"
        assert {processes[p]["env"]["PROJECTOR_SHARD"] for p in ("projector", "projector-2")} == {"0", "1"}
        api = processes["control-api"]["env"]
        assert processes["control-api-2"]["env"]["NOETL_CREDENTIALS_KEY"] == api["NOETL_CREDENTIALS_KEY"]

        # the three streams are kept on the three servers
        streams = _streams(processes["nats-1"]["monitor_port"])
        assert set(streams) == {"NOETL_COMMANDS", "NOETL_EVENTS", "NOETL_DLQ"}
        for stream in streams.values():
            assert stream["config"]["num_replicas"] == 3
            assert len(stream["cluster"]["replicas"]) == 2

        # lose, for good, the server leading the commands stream and the first API replica
        leader = streams["NOETL_COMMANDS"]["cluster"]["leader"]
        for name in (leader, "control-api"):
            killed = _dev(state_dir, "kill", name)
            assert killed.returncode == 0 and f"killed {name}" in killed.stdout
        assert _dev(state_dir, "status").returncode == 1
        with Api(api_urls[1], token=state["admin_token"]) as client:
            started = client.execute("examples/hello")
            final = client.wait(started["execution_id"], timeout=120)
        assert final["status"] == "COMPLETED", final

        def projected() -> bool:
            """Every event of the execution the API wrote is in the read model (both shards run)."""
            with psycopg.connect(state["database_url"]) as conn:
                row = conn.execute(
                    "SELECT count(*), count(e.event_id) FROM noetl.outbox o"
                    " LEFT JOIN noetl.event e ON e.event_id = o.event_id"
                    " WHERE o.execution_id = %s AND o.subject LIKE 'noetl.events.%%'",
                    (int(started["execution_id"]),),
                ).fetchone()
            return row is not None and 0 < row[0] == row[1]

        wait_until(projected, 60, "the execution's events in noetl.event")

        # a server comes back with its recorded configuration and store, and rejoins
        restarted = _dev(state_dir, "restart", leader)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr
        after = read_state(state_dir)
        assert after is not None
        processes = {**processes, **{f"{leader} (restarted)": after["processes"][leader]}}
    finally:
        down = _dev(state_dir, "down")
    assert down.returncode == 0, down.stdout + down.stderr
    for name, entry in processes.items():
        assert not is_running(entry["pid"], entry["started"]), name
        assert group_members(entry["pid"]) == [], name
    assert not (state_dir / "stack.json").exists()
