"""No client input produces a 5xx; every error has the one ErrorBody shape."""

from __future__ import annotations

import re
from typing import Any

import pytest

POST_ROUTES = [
    "/api/catalog/register",
    "/api/catalog/resource",
    "/api/execute",
    "/api/events",
    "/api/commands/1/claim",
    "/api/executions/1/cancel",
    "/api/worker/pool/register",
    "/api/worker/pool/heartbeat",
    "/api/worker/pool/deregister",
    "/api/internal/outbox/claim",
    "/api/internal/outbox/mark-published",
    "/api/internal/outbox/mark-failed",
    "/api/internal/events/project",
]

GARBAGE: list[bytes] = [
    b"",
    b"{",
    b"null",
    b"[]",
    b"42",
    b'"text"',
    b"\xff\xfe\x00",
    b'{"events": 5}',
    b'{"events": [null]}',
    b'{"execution_id": 99999999999999999999999, "event_type": "x", "event_id": 1}',
    b'{"execution_id": -1, "event_type": "x"}',
    b'{"execution_id": 1, "event_type": "x\\u0000y", "event_id": 1}',
    b'{"path": "\\u0000", "version": 1}',
    b'{"path": 5}',
    b'{"worker_id": "w", "pool": "shared", "capacity": 99999999999}',
    b'{"outbox_ids": [1, "x"]}',
    b'{"outbox_ids": [99999999999999999999]}',
    b'{"outbox_id": 1, "error": "\\u0000", "attempts": 1}',
    b'{"events": [{"execution_id": 1, "event_id": 1, "event_type": "\\u0000"}]}',
    b'{"content": 5}',
    b'{"content": "apiVersion: noetl.io/v1\\nkind: Playbook"}',
    b'{"limit": 1, "wait_ms": 0, "extra": true}',
    b"[" * 5000 + b"]" * 5000,
]


def _check(reply: Any) -> None:
    assert reply.status_code < 500, (reply.status_code, reply.text[:300])
    if reply.status_code >= 400:
        body = reply.json()
        assert set(body) <= {"status_code", "error", "detail", "extra"}
        assert body["status_code"] == reply.status_code and body["error"] and body["detail"]


@pytest.mark.parametrize("route", POST_ROUTES)
async def test_garbage_bodies_never_5xx(api: Any, route: str) -> None:
    await api.register()
    for body in GARBAGE:
        for content_type in ("application/json", "text/plain"):
            reply = await api.client.post(
                route, content=body, headers={**api.auth, "content-type": content_type}
            )
            _check(reply)


async def test_garbage_paths_and_queries_never_5xx(api: Any) -> None:
    for path in (
        "/api/executions/0",
        "/api/executions/-5",
        "/api/executions/1e9",
        f"/api/executions/{2**63}",
        "/api/executions/%00",
        "/api/commands/abc",
        "/api/commands/99999999999999999999999",
        "/api/executions?limit=abc",
        "/api/executions?limit=-1",
        "/api/executions?status=%00",
        "/api/executions?path=%00",
        "/api/executions/1/events?after=-1",
        "/api/executions/1/events?after=99999999999999999999999",
        "/api/executions/1/events?limit=0",
        "/api/nope",
    ):
        _check(await api.client.get(path))
    _check(await api.client.put("/api/execute", json={}))


def _check_page(reply: Any) -> None:
    """The inspector's pages answer a browser: a refusal is a page saying why, never a 5xx."""
    if reply.headers.get("content-type", "").startswith("application/json"):
        _check(reply)  # the API's refusals (the auth middleware's) keep the one error shape
    elif reply.status_code >= 400:
        assert reply.status_code < 500, (reply.status_code, reply.text[:300])
        assert reply.headers["content-type"].startswith("text/html") and "<title>" in reply.text


async def test_oversize_body_is_413(api: Any) -> None:
    reply = await api.client.post(
        "/api/events", content=b" " * (11 * 1024 * 1024), headers={"content-type": "application/json"}
    )
    assert reply.status_code == 413
    assert reply.json()["error"] == "payload_too_large"


async def test_every_route_of_the_app_survives_garbage(api: Any) -> None:
    """Enumerates the app's routes, so a route added later is covered without being listed."""
    await api.register()
    checked = 0
    for route in api.client.app.routes:
        if route.path.startswith("/schema"):
            continue  # Litestar's OpenAPI renderer: its own HTML 404 for unknown documents
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for method in sorted(route.methods - {"OPTIONS", "HEAD"}):
            bodies = GARBAGE[:8] + GARBAGE[-1:] if method != "GET" else [b""]
            for body in bodies:
                for content_type in ("application/json", "application/x-www-form-urlencoded"):
                    reply = await api.client.request(
                        method, path, content=body, headers={**api.auth, "content-type": content_type}
                    )
                    try:
                        if path.startswith("/ui"):
                            _check_page(reply)
                        else:
                            _check(reply)
                    except Exception as exc:
                        detail = f"{method} {path} {body[:40]!r}: {reply.status_code} {reply.text[:200]!r}"
                        raise AssertionError(detail) from exc
                    checked += 1
    assert checked > 300
