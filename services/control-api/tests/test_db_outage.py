"""A Postgres restart under the control-api: 503 ``unavailable`` with Retry-After meanwhile, never
a hang; /readyz false; the pool reconnects by itself and requests succeed again."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from noetl_dev._procs import Proc, create_database, start_postgres

#: A request during the outage must answer within this (the pool's wait for a connection is bounded).
ANSWER_WITHIN = 12.0


@pytest.fixture
def own_postgres(noetl_state_dir: Path) -> Iterator[tuple[list[Proc], str, Path]]:
    """A Postgres of this test alone (the shared one must not be killed); under the state dir,
    which the server's unprivileged user can reach when the tests run as root."""
    state = noetl_state_dir / f"pg-outage-{uuid.uuid4().hex[:8]}"
    proc, admin = start_postgres(state)
    procs = [proc]
    try:
        yield procs, admin, state
    finally:
        for p in procs:
            p.stop(10)


async def test_the_api_survives_a_postgres_restart(own_postgres: Any, serve_app: Any, make_settings: Any) -> None:
    procs, admin, state = own_postgres
    database_url = create_database(admin, "outage")
    # the test Postgres runs with synchronous_commit=off: a crash would lose the migrations
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("ALTER DATABASE outage SET synchronous_commit = on")
    port = int(admin.rsplit(":", 1)[1].split("/")[0])
    async with serve_app(make_settings(database_url)) as http:
        assert (await http.get("/api/executions")).status_code == 200
        procs[0].popen.send_signal(signal.SIGKILL)
        procs[0].popen.wait(10)

        started = time.monotonic()
        down = await http.get("/api/executions")
        took = time.monotonic() - started
        assert down.status_code == 503, down.text
        assert down.json()["error"] == "unavailable"
        assert int(down.headers["retry-after"]) >= 1
        assert took < ANSWER_WITHIN, f"a request during the outage took {took:.1f}s"
        assert (await http.get("/readyz")).status_code == 503

        proc, _ = start_postgres(state, port=port)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while (await http.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "the pool did not reconnect within 30 s"
            await asyncio.sleep(0.05)  # poll interval of a bounded wait on a condition
        assert (await http.get("/api/executions")).status_code == 200
        reply = await http.post("/api/catalog/register", json={"content": "not: [a playbook"})
        assert reply.status_code in (400, 422)
    assert isinstance(http, httpx.AsyncClient)
