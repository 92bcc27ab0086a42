"""Conformance suite fixtures: one whole stack per session, the shared conformance set read in place.

See ``conformance_support.py`` for where the set is read from and how each run is checked.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import psycopg
import pytest
from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev.testing import suite_stack
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).parent))

from conformance_support import CONFORMANCE, OWN, PAGED_USERS, Conn

#: set when the local HTTP server stops: releases requests parked on ``/slow/<seconds>``
SLOW_RELEASE = threading.Event()


class _Paged(BaseHTTPRequestHandler):
    """Mixed before ``echo_server.Handler``: ``GET /api/v1/users?offset=&limit=`` pages 35 users,
    ``GET /slow/<seconds>`` answers late."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path.startswith("/slow/"):
            # a slow endpoint: answers after N seconds, or at once when the server shuts down
            SLOW_RELEASE.wait(float(url.path.removeprefix("/slow/")))
            self._handle()  # type: ignore[attr-defined]
            return
        if url.path != "/api/v1/users":
            self._handle()  # type: ignore[attr-defined]  # echo_server.Handler's
            return
        query = parse_qs(url.query)
        offset, limit = int(query.get("offset", ["0"])[0]), int(query.get("limit", ["10"])[0])
        page = PAGED_USERS[offset : offset + limit]
        payload = {"users": page, "has_more": offset + limit < len(PAGED_USERS), "total": len(PAGED_USERS)}
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="session")
def echo() -> Iterator[tuple[str, Any]]:
    """The set's ``support/echo_server.py`` (plus a paged and a slow route) in a thread: (URL, its call counter)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("echo_server", CONFORMANCE / "support" / "echo_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls: Any = module.CALLS
    handler = type("Handler", (_Paged, module.Handler), {})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", calls
    finally:
        SLOW_RELEASE.set()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def stack(noetl_state_dir: Path) -> Iterator[Stack]:
    with suite_stack(
        noetl_state_dir / "conformance-stack",
        database_prefix="conf",
        # a cancelled command's worker learns it at its next heartbeat (409): keep that short
        service_overrides={"worker-shared": {"WORKER_HEARTBEAT_INTERVAL": "0.2"}},
    ) as running:
        yield running


@pytest.fixture(scope="session")
def api(stack: Stack) -> Iterator[Api]:
    with Api(stack.api_url, token=stack.token) as client:
        for file in sorted(OWN.glob("*.yaml")):
            client.register_file(file)
        yield client


@pytest.fixture(scope="session")
def pg_local(stack: Stack) -> None:
    """The ``pg_local`` credential the postgres playbooks name, pointing at the stack's database."""
    assert stack.database_url is not None
    info = psycopg.conninfo.conninfo_to_dict(stack.database_url)
    data = {
        "db_host": info.get("host", "127.0.0.1"),
        "db_port": str(info.get("port", "5432")),
        "db_user": info.get("user", "postgres"),
        "db_password": info.get("password") or "",
        "db_name": info["dbname"],
    }
    body = {"name": "pg_local", "credential_type": "postgres", "data": data}
    reply = httpx.post(f"{stack.api_url}/api/credentials", json=body, headers=stack.auth(), timeout=30)
    assert reply.status_code in (200, 201), reply.text


@pytest.fixture
def db(stack: Stack) -> Iterator[Conn]:
    assert stack.database_url is not None
    with psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn
