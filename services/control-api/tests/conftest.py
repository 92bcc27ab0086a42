"""Fixtures of the control-api tests: the real app on a fresh Postgres database per test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import psycopg
import pytest
from noetl_common import Snowflake
from noetl_control_api import RetentionPolicy, Settings, SweepPolicy, create_app

SERVER_URL = "http://control-api.test:8082"

#: The configured tokens of the test app (variable → token), one per role.
TOKENS = {
    "NOETL_ADMIN_TOKEN": "test-admin-token-0123456789abcdefghijklmnop",
    "NOETL_PUBLISHER_TOKEN": "test-publisher-token-0123456789abcdefghijkl",
    "NOETL_PROJECTOR_TOKEN": "test-projector-token-0123456789abcdefghijkl",
    "NOETL_WORKER_TOKEN_SHARED": "test-worker-shared-token-0123456789abcdefg",
    "NOETL_WORKER_TOKEN_PYTHON": "test-worker-python-token-0123456789abcdefg",
    "NOETL_WORKER_TOKEN_SYSTEM": "test-worker-system-token-0123456789abcdefg",
}
ADMIN = {"authorization": f"Bearer {TOKENS['NOETL_ADMIN_TOKEN']}"}
PUBLISHER = {"authorization": f"Bearer {TOKENS['NOETL_PUBLISHER_TOKEN']}"}
PROJECTOR = {"authorization": f"Bearer {TOKENS['NOETL_PROJECTOR_TOKEN']}"}
WORKER = {"authorization": f"Bearer {TOKENS['NOETL_WORKER_TOKEN_SHARED']}"}
SYSTEM_WORKER = {"authorization": f"Bearer {TOKENS['NOETL_WORKER_TOKEN_SYSTEM']}"}


def bearer(variable: str) -> dict[str, str]:
    """The Authorization header of the configured token ``variable``."""
    return {"authorization": f"Bearer {TOKENS[variable]}"}


#: A retention policy of zero: tests of the purge itself sweep what they just wrote.
NO_RETENTION = RetentionPolicy(outbox_seconds=0, executions_seconds=0, events_seconds=0)
#: No background sweep: a test drives the sweeper itself (``services.sweeper.sweep()``), or it
#: would act on what other tests leave open on purpose.
NO_SWEEP = SweepPolicy(interval_seconds=0)


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Settings of the test app: the test tokens, the test server URL, no retention floor, no
    background sweep, and ``overrides``."""
    return Settings(
        **{
            "database_url": database_url,
            "tokens": dict(TOKENS),
            "server_url": SERVER_URL,
            "retention": NO_RETENTION,
            "sweep": NO_SWEEP,
            **overrides,
        }
    )


class Auth:
    """The test tokens' Authorization headers, by role (the ``auth`` fixture)."""

    TOKENS = TOKENS
    ADMIN = ADMIN
    PUBLISHER = PUBLISHER
    PROJECTOR = PROJECTOR
    WORKER = WORKER
    SYSTEM_WORKER = SYSTEM_WORKER
    bearer = staticmethod(bearer)
    route_owner = staticmethod(lambda method, path: route_owner(method, path))


class RoleAuth(httpx.Auth):
    """Sends the token of the role that owns each route, as the suite's services would: the
    shared pool's worker for worker routes, the publisher and projector for theirs, the admin
    for everything else. A request that carries its own Authorization header keeps it."""

    def auth_flow(self, request: httpx.Request) -> Any:
        if "authorization" not in request.headers:
            request.headers["authorization"] = f"Bearer {TOKENS[route_owner(request.method, request.url.path)]}"
        yield request


def route_owner(method: str, path: str) -> str:
    """The configured token variable of the role that calls ``method path`` in the suite."""
    if path.startswith("/api/internal/outbox/"):
        return "NOETL_PUBLISHER_TOKEN"
    if path == "/api/internal/events/project":
        return "NOETL_PROJECTOR_TOKEN"
    worker_route = (
        path == "/api/events"
        or (path.startswith("/api/commands/") and path.endswith("/claim"))
        or path.startswith("/api/worker/pool/")
        or path in ("/api/internal/credentials/resolve", "/api/internal/keychain/resolve", "/api/internal/keychain/token")
        or (method == "PUT" and path.startswith(("/api/result/", "/api/internal/objects/")))
    )
    return "NOETL_WORKER_TOKEN_SHARED" if worker_route else "NOETL_ADMIN_TOKEN"

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
        # the token of the role that owns each route is sent by RoleAuth; tests pass this where the
        # suite's services would send their own credential
        self.auth: dict[str, str] = {}
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

    async def hold(self, execution_id: int, worker_id: str = "w1") -> dict[str, Any]:
        """Claim the only open command of the execution (a worker now holds a lease in it)."""
        (command,) = await self.open_commands(execution_id)
        claim = await self.claim(command["event_id"], worker_id)
        assert claim.status_code == 200, claim.text
        return {**command, "status": "CLAIMED", "attempt": claim.json()["attempt"]}

    async def run_command(self, execution_id: int, result: Any, worker_id: str = "w1") -> dict[str, Any]:
        """Claim the only open command (unless held already) and complete it like a worker would."""
        (command,) = await self.open_commands(execution_id)
        if command["status"] == "PENDING":
            command = await self.hold(execution_id, worker_id)
        meta = {"command_id": command["command_id"], "attempt": command["attempt"]}
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

    async def project(self, execution_id: int) -> None:
        """What the publisher and the projector would do: the outbox's events into noetl.event."""
        events = [
            r["payload"] for r in await self.outbox(execution_id) if r["subject"].startswith("noetl.events.")
        ]
        reply = await self.client.post("/api/internal/events/project", json={"events": events}, headers=self.auth)
        assert reply.status_code == 200, reply.text

    async def replay(self, execution_id: int) -> dict[str, Any]:
        """Project the execution's events, then ``GET /api/executions/{id}/replay``."""
        await self.project(execution_id)
        reply = await self.client.get(f"/api/executions/{execution_id}/replay")
        assert reply.status_code == 200, reply.text
        return dict(reply.json())

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
    return settings_for(database_url)


@pytest.fixture
def auth() -> type[Auth]:
    return Auth


@pytest.fixture
def make_settings() -> Any:
    """``settings_for``: Settings of the test app with other values."""
    return settings_for


@pytest.fixture
def hold() -> Any:
    """``hold_command``: start a playbook and claim its first command as a worker."""
    return hold_command


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
        async with httpx.AsyncClient(
            transport=transport, base_url="http://control-api.test", auth=RoleAuth()
        ) as http:
            http.app = app  # type: ignore[attr-defined]
            http.database_url = settings.database_url  # type: ignore[attr-defined]
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


async def hold_command(
    client: httpx.AsyncClient,
    *,
    content: str = LINEAR,
    path: str = "tests/linear",
    worker_id: str = "w1",
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Register and start a playbook, then claim its first command as ``worker_id`` (with
    ``headers``' token, else the shared pool's): ``{execution_id, event_id, command_id, worker_id}``."""
    registered = await client.post("/api/catalog/register", json={"content": content})
    assert registered.status_code == 201, registered.text
    started = await client.post("/api/execute", json={"path": path})
    assert started.status_code == 201, started.text
    execution_id = int(started.json()["execution_id"])
    command = await client.get(f"/api/executions/{execution_id}")
    assert command.status_code == 200
    async with await psycopg.AsyncConnection.connect(client.database_url) as conn:  # type: ignore[attr-defined]
        cur = await conn.execute(
            "SELECT event_id, command_id FROM noetl.command WHERE execution_id = %s AND status = 'PENDING'"
            " ORDER BY command_id LIMIT 1",
            (execution_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    claim = await client.post(f"/api/commands/{row[0]}/claim", json={"worker_id": worker_id}, headers=headers)
    assert claim.status_code == 200, claim.text
    return {"execution_id": execution_id, "event_id": row[0], "command_id": row[1], "worker_id": worker_id}
