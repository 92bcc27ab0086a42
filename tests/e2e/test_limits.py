"""Sizes through the real suite: an event too large for NATS never wedges the publisher.

Its own stack and nats-server: the operator lowers the server's max_payload under a
running suite. The publisher (which checked the server at start) meets events it can no
longer publish: each is copied to NOETL_DLQ and marked dead, its execution fails naming
the cause, and the publisher carries on. A publisher started now refuses to start.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
import pytest
from noetl_common import DLQ_STREAM
from noetl_dev import Stack, create_database, free_port, start_nats
from noetl_dev.testing import config_error, wait_until

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
SMALL_MAX_PAYLOAD = 64 * 1024


@pytest.fixture
def small_world(noetl_state_dir: Path, postgres_admin_url: str) -> Iterator[dict[str, Any]]:
    """A suite on a nats-server of its own, restartable with another max_payload."""
    if os.environ.get("NOETL_E2E_API_URL"):
        pytest.skip("starts its own local Stack and nats-server")
    nats_dir = noetl_state_dir / f"limits-nats-{uuid.uuid4().hex[:6]}"
    port = free_port()
    world: dict[str, Any] = {"nats_dir": nats_dir, "port": port}
    world["nats"], nats_url = start_nats(nats_dir, port)
    stack = Stack(
        noetl_state_dir / f"limits-stack-{uuid.uuid4().hex[:6]}",
        database_url=create_database(postgres_admin_url, f"e2e_limits_{uuid.uuid4().hex[:10]}"),
        nats_url=nats_url,
        ready_timeout=90.0,
    )
    world["stack"], world["nats_url"] = stack, nats_url
    stack.start()
    try:
        yield world
    finally:
        leftovers = stack.stop(grace=10.0)
        world["nats"].stop()
        assert not leftovers, f"processes left running after stop: {leftovers}"


def _restart_nats_smaller(world: dict[str, Any]) -> None:
    world["nats"].stop()
    world["nats"], _ = start_nats(world["nats_dir"], world["port"], max_payload=SMALL_MAX_PAYLOAD)


async def _dlq_copy(nats_url: str, execution_id: int) -> Any:
    conn = await nats.connect(nats_url)
    try:
        return await conn.jetstream().get_last_msg(DLQ_STREAM, f"noetl.dlq.outbox.{execution_id}")
    finally:
        await conn.close()


def test_an_event_too_large_for_nats_is_dead_lettered_and_fails_its_execution(
    small_world: dict[str, Any],
) -> None:
    stack: Stack = small_world["stack"]
    publisher = stack.services["outbox-publisher"]
    with httpx.Client(base_url=stack.api_url, timeout=30.0, headers=stack.auth()) as http:
        registered = http.post(
            "/api/catalog/register",
            content=(EXAMPLES / "hello.yaml").read_bytes(),
            headers={"content-type": "application/yaml"},
        )
        assert registered.status_code == 201, registered.text
        reconnects = publisher.log_path.read_text().count("nats_reconnected")
        _restart_nats_smaller(small_world)
        wait_until(
            lambda: publisher.log_path.read_text().count("nats_reconnected") > reconnects,
            60,
            "the publisher to reconnect to the smaller server",
        )

        # 100 KB: well within the API's limits, over the server's 64 KiB
        reply = http.post("/api/execute", json={"path": "examples/hello", "payload": {"blob": "b" * 100_000}})
        assert reply.status_code == 201, reply.text
        execution_id = int(reply.json()["execution_id"])

        def failed() -> dict[str, Any] | None:
            view: dict[str, Any] = http.get(f"/api/executions/{execution_id}").json()
            return view if view["status"] == "FAILED" else None

        view = wait_until(failed, 60, f"execution {execution_id} to fail")
        assert "could not be published" in view["error"]
        assert f"max_payload {SMALL_MAX_PAYLOAD}" in view["error"]
        wait_until(
            lambda: http.get("/api/internal/outbox/pending-count").json()["pending"] == 0,
            60,
            "pending-count back to 0",
        )
        ready = http.get(f"{publisher.url}/readyz")

    assert publisher.alive() and ready.status_code == 200, ready.text
    assert stack.database_url is not None
    with psycopg.connect(stack.database_url) as conn:
        rows = conn.execute(
            "SELECT payload->>'event_type', status, last_error FROM noetl.outbox"
            " WHERE execution_id = %s AND status = 'FAILED' ORDER BY outbox_id",
            (execution_id,),
        ).fetchall()
    assert [r[0] for r in rows] == ["playbook.execution_requested", "playbook.started"]
    assert all("max_payload" in r[2] for r in rows)
    copy = asyncio.run(_dlq_copy(small_world["nats_url"], execution_id))
    assert copy.headers["Noetl-Original-Subject"].startswith("noetl.events.")
    assert "max_payload" in copy.headers["Noetl-Error"]
    assert copy.data is not None and len(copy.data) < SMALL_MAX_PAYLOAD

    # a publisher started now checks the server against what the API writes, and refuses
    env = {**publisher.env, "PUBLISHER_METRICS_BIND": f"127.0.0.1:{free_port()}"}
    line = config_error(publisher.argv, env)[-1]  # after its start-up log lines, exit 2
    assert line.startswith("configuration error: the NATS server's max_payload is")
    assert f"max_payload is {SMALL_MAX_PAYLOAD} bytes" in line and "1048576" in line
    assert f"NOETL_NATS_MAX_PAYLOAD_BYTES={SMALL_MAX_PAYLOAD}" in line
