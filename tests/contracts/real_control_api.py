"""The real control-api for contract tests: the app on a fresh database, served over HTTP on loopback.

It runs in the test's own event loop (uvicorn on a socket bound before it starts, so a
request made at once waits in the listen backlog instead of failing), and the services'
own ``ControlPlaneClient`` talks to it with the token of the role each service holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any, LiteralString

import httpx
import psycopg
import uvicorn
from cryptography.fernet import Fernet
from noetl_common import ControlPlaneClient, Snowflake
from noetl_control_api import Settings, create_app

#: The configured tokens of the app (variable → token), one per role the suite runs.
TOKENS = {
    "NOETL_ADMIN_TOKEN": "contract-admin-token-0123456789abcdefghijkl",
    "NOETL_PUBLISHER_TOKEN": "contract-publisher-token-0123456789abcdefgh",
    "NOETL_PROJECTOR_TOKEN": "contract-projector-token-0123456789abcdefgh",
    "NOETL_WORKER_TOKEN_SHARED": "contract-worker-shared-token-0123456789abcd",
}


class _QuietServer(uvicorn.Server):
    """Leaves signal handling to pytest."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class RunningControlApi:
    """A control-api being served: its URL, its database, a client per role."""

    url: str
    database_url: str

    def client(self, token_variable: str) -> ControlPlaneClient:
        """The services' client, sending the configured token ``token_variable``."""
        return ControlPlaneClient(self.url, token=TOKENS[token_variable], retries=0)

    def admin(self) -> httpx.AsyncClient:
        """A plain HTTP client with the admin token, for what no service does (register,
        execute, cancel, store secrets)."""
        return httpx.AsyncClient(
            base_url=self.url, headers={"authorization": f"Bearer {TOKENS['NOETL_ADMIN_TOKEN']}"}, timeout=30
        )

    async def sql(self, query: LiteralString, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the app's database (test setup and inspection only)."""
        async with await psycopg.AsyncConnection.connect(self.database_url, autocommit=True) as conn:
            cur = await conn.execute(query, params)
            return await cur.fetchall() if cur.description else []


@contextlib.asynccontextmanager
async def serve_control_api(database_url: str) -> AsyncIterator[RunningControlApi]:
    """Migrate ``database_url``, serve the app on a free loopback port, stop it on exit."""
    settings = Settings(
        database_url=database_url,
        tokens=dict(TOKENS),
        credentials_key=Fernet.generate_key().decode(),
        server_url="http://127.0.0.1",
    )
    app = create_app(settings, ids=Snowflake(1))
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    port = listener.getsockname()[1]
    async with app.state.lifespan():
        config = uvicorn.Config(
            app, lifespan="off", log_config=None, access_log=False, timeout_graceful_shutdown=5
        )
        server = _QuietServer(config)
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        try:
            yield RunningControlApi(url=f"http://127.0.0.1:{port}", database_url=database_url)
        finally:
            server.should_exit = True
            await serving
            listener.close()
