"""The WASM plug-in registry and the object store (architecture.md §6, §8)."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest

# The smallest valid module: magic + version, no sections.
EMPTY = b"\0asm\x01\0\0\0"
# A module with one custom section, so its bytes (and digest) differ from EMPTY.
TAGGED = EMPTY + b"\0\x04\x03tag"


async def test_publish_get_etag_and_304(api: Any) -> None:
    http: httpx.AsyncClient = api.client
    reply = await http.post("/api/internal/plugins/system/echo?version=1", content=EMPTY, headers=api.auth)
    assert reply.status_code == 201, reply.text
    digest = hashlib.sha256(EMPTY).hexdigest()
    assert reply.json() == {"path": "system/echo", "version": 1, "digest": digest, "size": 8, "changed": True}

    got = await http.get("/api/internal/plugins/system/echo", params={"version": 1}, headers=api.auth)
    assert got.status_code == 200
    assert got.content == EMPTY
    assert got.headers["etag"] == f'"{digest}"'
    assert got.headers["x-plugin-version"] == "1"

    cached = await http.get(
        "/api/internal/plugins/system/echo",
        params={"version": 1},
        headers={**api.auth, "if-none-match": f'"{digest}"'},
    )
    assert cached.status_code == 304
    assert cached.content == b""
    stale = await http.get(
        "/api/internal/plugins/system/echo",
        params={"version": 1},
        headers={**api.auth, "if-none-match": '"other"'},
    )
    assert stale.status_code == 200 and stale.content == EMPTY


async def test_republish_same_version_replaces_bytes_and_digest(api: Any) -> None:
    http: httpx.AsyncClient = api.client
    url = "/api/internal/plugins/acme/tool?version=3"
    first = await http.post(url, content=EMPTY, headers=api.auth)
    same = await http.post(url, content=EMPTY, headers=api.auth)
    assert (first.status_code, same.status_code) == (201, 200)
    assert same.json()["changed"] is False
    again = await http.post(url, content=TAGGED, headers=api.auth)
    assert again.status_code == 201 and again.json()["changed"] is True
    got = await http.get("/api/internal/plugins/acme/tool", params={"version": 3}, headers=api.auth)
    assert got.content == TAGGED
    assert got.headers["etag"] == f'"{hashlib.sha256(TAGGED).hexdigest()}"'
    # the old digest is no longer current: a worker holding it gets the new bytes, not 304
    old = hashlib.sha256(EMPTY).hexdigest()
    refreshed = await http.get(
        "/api/internal/plugins/acme/tool",
        params={"version": 3},
        headers={**api.auth, "if-none-match": f'"{old}"'},
    )
    assert refreshed.status_code == 200 and refreshed.content == TAGGED


async def test_json_publish_latest_version_and_list(api: Any) -> None:
    http: httpx.AsyncClient = api.client
    body = {"module_base64": base64.b64encode(EMPTY).decode()}
    one = await http.post("/api/internal/plugins/acme/json", json=body, headers=api.auth)
    two = await http.post(
        "/api/internal/plugins/acme/json",
        json={**body, "module_base64": base64.b64encode(TAGGED).decode()},
        headers=api.auth,
    )
    assert (one.json()["version"], two.json()["version"]) == (1, 2)
    latest = await http.get("/api/internal/plugins/acme/json", headers=api.auth)
    assert latest.headers["x-plugin-version"] == "2" and latest.content == TAGGED
    listed = await http.get("/api/internal/plugins", params={"path": "acme/json"}, headers=api.auth)
    assert [(p["path"], p["version"], p["size"]) for p in listed.json()["plugins"]] == [
        ("acme/json", 1, 8),
        ("acme/json", 2, len(TAGGED)),
    ]


@pytest.mark.parametrize(
    ("url", "body", "status"),
    [
        ("/api/internal/plugins/a/b?version=1", b"not wasm", 400),
        ("/api/internal/plugins/a/b%20c?version=1", EMPTY, 400),
        ("/api/internal/plugins/a/b?version=0", EMPTY, 400),
    ],
)
async def test_publish_refuses_bad_input(api: Any, url: str, body: bytes, status: int) -> None:
    reply = await api.client.post(url, content=body, headers=api.auth)
    assert reply.status_code == status, reply.text


async def test_unknown_plugin_is_404(api: Any) -> None:
    reply = await api.client.get("/api/internal/plugins/none/such", headers=api.auth)
    assert reply.status_code == 404 and reply.json()["error"] == "not_found"


async def test_object_put_get(api: Any) -> None:
    http: httpx.AsyncClient = api.client
    url = "/api/internal/objects/executions/1/step/out.arrows"
    created = await http.put(url, content=b"abc", headers={**api.auth, "content-type": "application/x-test"})
    replaced = await http.put(url, content=b"abcd", headers=api.auth)
    assert (created.status_code, replaced.status_code) == (201, 200)
    got = await http.get(url, headers=api.auth)
    assert got.content == b"abcd"
    assert got.headers["etag"] == f'"{hashlib.sha256(b"abcd").hexdigest()}"'
    missing = await http.get("/api/internal/objects/nothing/here", headers=api.auth)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/internal/plugins"),
        ("GET", "/api/internal/plugins/a"),
        ("POST", "/api/internal/plugins/a"),
        ("GET", "/api/internal/objects/k"),
        ("PUT", "/api/internal/objects/k"),
    ],
)
async def test_plugin_and_object_routes_need_a_credential(api: Any, auth: Any, method: str, path: str) -> None:
    reply = await api.client.request(method, path, content=EMPTY, headers={"authorization": ""})
    assert reply.status_code == 401 and reply.json()["error"] == "unauthenticated"
    # a publisher's token is a credential, but of a role that has no business here
    wrong_role = await api.client.request(method, path, content=EMPTY, headers=auth.PUBLISHER)
    assert wrong_role.status_code == 403 and wrong_role.json()["error"] == "forbidden"


async def test_only_an_admin_publishes_plugins(api: Any, auth: Any) -> None:
    for role in (auth.WORKER, auth.SYSTEM_WORKER):
        refused = await api.client.post("/api/internal/plugins/acme/x", content=EMPTY, headers=role)
        assert refused.status_code == 403
    assert (await api.client.post("/api/internal/plugins/acme/x", content=EMPTY)).status_code == 201


async def test_seed_dir_publishes_builtins_once(
    database_url: str, serve_app: Any, tmp_path: Path, make_settings: Any
) -> None:
    (tmp_path / "system").mkdir()
    (tmp_path / "system" / "echo.wasm").write_bytes(EMPTY)
    (tmp_path / "system" / "echo@2.wasm").write_bytes(TAGGED)
    (tmp_path / "notes.txt").write_text("ignored")
    settings = make_settings(database_url, plugin_seed_dir=str(tmp_path))
    auth: dict[str, str] = {}  # the admin's token, sent by the test client
    async with serve_app(settings) as http:
        listed = await http.get("/api/internal/plugins", headers=auth)
        assert [(p["path"], p["version"]) for p in listed.json()["plugins"]] == [
            ("system/echo", 1),
            ("system/echo", 2),
        ]
        # an operator re-publishes version 1; a restart must not put the seed back over it
        await http.post(
            "/api/internal/plugins/system/echo?version=1", content=EMPTY + b"\0\x02\x01x", headers=auth
        )
    async with serve_app(settings) as http:
        got = await http.get("/api/internal/plugins/system/echo", params={"version": 1}, headers=auth)
        assert got.content == EMPTY + b"\0\x02\x01x"
