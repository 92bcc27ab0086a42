"""Every internal route needs the bearer token: unset on the server → 503, wrong → 403."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from noetl_control_api import Settings

ROUTES = [
    ("POST", "/api/internal/outbox/claim", {"limit": 1}),
    ("POST", "/api/internal/outbox/mark-published", {"outbox_ids": [1]}),
    ("POST", "/api/internal/outbox/mark-failed", {"outbox_id": 1, "error": "e", "attempts": 1}),
    ("GET", "/api/internal/outbox/pending-count", None),
    ("POST", "/api/internal/events/project", {"events": []}),
    ("POST", "/api/internal/cleanup/purge", {}),
    ("POST", "/api/internal/cleanup/sweep", {}),
]


@pytest.fixture
async def tokenless(database_url: str, serve_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(Settings(database_url=database_url), node_id=2) as http:
        yield http


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_unset_token_is_503(tokenless: httpx.AsyncClient, method: str, path: str, body: Any) -> None:
    reply = await tokenless.request(method, path, json=body, headers={"authorization": "Bearer anything"})
    assert reply.status_code == 503
    assert reply.json()["error"] == "unavailable"


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
async def test_missing_or_wrong_token_is_403(api: Any, method: str, path: str, body: Any) -> None:
    for headers in (
        {},
        {"authorization": "Bearer wrong"},
        {"authorization": api.auth["authorization"][7:]},
        {"authorization": "Basic " + api.auth["authorization"][7:]},
    ):
        reply = await api.client.request(method, path, json=body, headers=headers)
        assert reply.status_code == 403, headers
        assert reply.json()["error"] == "forbidden"
    ok = await api.client.request(method, path, json=body, headers=api.auth)
    assert ok.status_code == 200, ok.text
    msgspec.json.decode(ok.content)


def _internal_routes(app: Any) -> list[tuple[str, str]]:
    """Every (method, concrete path) of the app under /api/internal, path parameters filled in."""
    found: list[tuple[str, str]] = []
    for route in app.routes:
        if not route.path.startswith("/api/internal"):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
            found.append((method, path))
    return found


async def test_every_internal_route_of_the_app_is_guarded(api: Any, tokenless: httpx.AsyncClient) -> None:
    """Enumerates the app's routes, so a route added later without the guard fails here."""
    routes = _internal_routes(api.client.app)
    # the outbox, projection, cleanup, credentials, keychain, plug-in, object and command routes
    assert len(routes) >= 12, routes
    for method, path in routes:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "wrong"}):
            reply = await api.client.request(method, path, content=b"{}", headers=headers)
            assert reply.status_code == 403, (method, path, headers, reply.text)
            assert reply.json()["error"] == "forbidden"
        unset = await tokenless.request(method, path, content=b"{}", headers={"authorization": "Bearer x"})
        assert unset.status_code == 503, (method, path, unset.text)
        assert unset.json()["error"] == "unavailable"
