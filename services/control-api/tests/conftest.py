"""Fixtures of the control-api tests: the real app on a fresh Postgres database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import psycopg
import pytest
from noetl_common import Snowflake
from noetl_control_api import Settings, create_app

TOKEN = "internal-test-token"
SERVER_URL = "http://control-api.test:8082"

LINEAR = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: linear, path: tests/linear}
workload: {greeting: hello}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'n': 1}"}
    next: {spec: {mode: exclusive}, arcs: [{step: second}]}
  - step: second
    tool: {kind: python, code: "result = {'n': 2}"}
    next: {spec: {mode: exclusive}, arcs: [{step: end, set: {ctx.total: "{{ second.n }}"}}]}
  - step: end
    tool: {kind: python, code: "result = {'n': 3}"}
"""


class Api:
    """Small helpers over the HTTP client so tests read as the protocol."""

    def __init__(self, client: httpx.AsyncClient, db: psycopg.AsyncConnection[Any]) -> None:
        self.client = client
        self.db = db
        self.auth = {"authorization": f"Bearer {TOKEN}"}
        self.server_url = SERVER_URL
        self.linear = LINEAR

    async def register(self, content: str = LINEAR) -> dict[str, Any]:
        response = await self.client.post("/api/catalog/register", json={"content": content})
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def execute(self, path: str = "tests/linear", payload: dict[str, Any] | None = None) -> int:
        response = await self.client.post("/api/execute", json={"path": path, "payload": payload or {}})
        assert response.status_code == 201, response.text
        return int(response.json()["execution_id"])

    async def open_commands(self, execution_id: int) -> list[dict[str, Any]]:
        cur = await self.db.execute(
            "SELECT command_id, event_id, step, status, attempt FROM noetl.command"
            " WHERE execution_id = %s AND status IN ('PENDING', 'CLAIMED') ORDER BY command_id",
            (execution_id,),
        )
        return [
            dict(zip(("command_id", "event_id", "step", "status", "attempt"), r, strict=True))
            for r in await cur.fetchall()
        ]

    async def claim(self, event_id: int, worker_id: str = "w1") -> Any:
        return await self.client.post(f"/api/commands/{event_id}/claim", json={"worker_id": worker_id})

    async def post_events(self, body: Any) -> Any:
        return await self.client.post("/api/events", json=body)

    async def run_command(self, execution_id: int, result: Any, worker_id: str = "w1") -> dict[str, Any]:
        """Claim the only open command and complete it like a worker would."""
        (command,) = await self.open_commands(execution_id)
        claim = await self.claim(command["event_id"], worker_id)
        assert claim.status_code == 200, claim.text
        meta = {"command_id": command["command_id"], "attempt": claim.json()["attempt"]}
        events = [
            {
                "execution_id": execution_id,
                "event_type": "command.started",
                "step": command["step"],
                "meta": meta,
                "event_id": self.ids.next_id(),
                "worker_id": worker_id,
            },
            {
                "execution_id": execution_id,
                "event_type": "command.completed",
                "step": command["step"],
                "meta": meta,
                "context": {"result": result},
                "event_id": self.ids.next_id(),
                "worker_id": worker_id,
            },
        ]
        reply = await self.post_events({"events": events})
        assert reply.status_code == 200, reply.text
        return command

    ids = Snowflake(900)

    async def outbox(self, execution_id: int | None = None) -> list[dict[str, Any]]:
        cur = await self.db.execute(
            "SELECT outbox_id, event_id, subject, payload, status FROM noetl.outbox"
            " WHERE %(e)s::bigint IS NULL OR execution_id = %(e)s ORDER BY outbox_id",
            {"e": execution_id},
        )
        keys = ("outbox_id", "event_id", "subject", "payload", "status")
        return [dict(zip(keys, r, strict=True)) for r in await cur.fetchall()]


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, internal_api_token=TOKEN, server_url=SERVER_URL)


@asynccontextmanager
async def serve(settings: Settings, node_id: int = 1) -> AsyncIterator[httpx.AsyncClient]:
    """The app served in the test's own event loop.

    Litestar's AsyncTestClient runs the app in a portal thread and answers each request
    synchronously, which blocks the test loop for the whole request: a long-poll or two
    concurrent claims could not overlap. httpx's ASGITransport keeps everything in one
    loop, so concurrency in the tests is real concurrency.
    """
    app = create_app(settings, ids=Snowflake(node_id))
    async with app.state.lifespan():
        transport = httpx.ASGITransport(app=cast(Any, app))
        async with httpx.AsyncClient(transport=transport, base_url="http://control-api.test") as http:
            http.app = app  # type: ignore[attr-defined]
            yield http


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings) as http:
        yield http


@pytest.fixture
def serve_app() -> Any:
    """``serve`` for tests that need an app with other settings."""
    return serve


@pytest.fixture
async def db(client: httpx.AsyncClient, database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A direct connection (autocommit) for assertions; the app has migrated by now."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def api(client: httpx.AsyncClient, db: psycopg.AsyncConnection[Any]) -> Api:
    return Api(client, db)
