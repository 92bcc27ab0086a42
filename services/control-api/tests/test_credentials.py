"""Credentials and keychain: encrypted at rest, never returned in clear, resolved only internally."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from cryptography.fernet import Fernet
from noetl_common import ConfigError
from noetl_control_api import Settings
from noetl_control_api.application import check_key_present

PASSWORD = "s3cr3t-Pa55-value"
PG_LOCAL: dict[str, Any] = {
    "name": "pg_local",
    "credential_type": "postgres",
    "description": "throw-away local database",
    "data": {
        "db_host": "127.0.0.1",
        "db_port": "5432",
        "db_user": "noetl",
        "db_password": PASSWORD,
        "db_name": "noetl",
    },
}


@pytest.fixture
def key() -> str:
    return Fernet.generate_key().decode()


@pytest.fixture
async def http(database_url: str, key: str, serve_app: Any, make_settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url, credentials_key=key)
    async with serve_app(settings) as client:
        yield client


async def _raw(database_url: str, sql: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(sql)
        return list(await cur.fetchall())


async def test_create_stores_ciphertext_and_replies_redacted(
    http: httpx.AsyncClient, database_url: str
) -> None:
    created = await http.post("/api/credentials", json=PG_LOCAL)

    assert created.status_code == 201, created.text
    assert PASSWORD not in created.text
    body = created.json()
    assert body["name"] == "pg_local" and body["credential_type"] == "postgres"
    assert body["data"] == {k: "[REDACTED]" for k in PG_LOCAL["data"]}
    (row,) = await _raw(database_url, "SELECT data_enc, credential_type FROM noetl.credential")
    raw = bytes(row[0])
    assert PASSWORD.encode() not in raw and b"db_password" not in raw and b"127.0.0.1" not in raw
    assert row[1] == "postgres"


async def test_get_list_and_delete_never_show_the_secret(http: httpx.AsyncClient) -> None:
    await http.post("/api/credentials", json=PG_LOCAL)
    await http.post(
        "/api/credentials", json={"name": "api", "credential_type": "bearer", "data": {"token": "tok-123456"}}
    )

    one = await http.get("/api/credentials/pg_local")
    listed = await http.get("/api/credentials")
    by_type = await http.get("/api/credentials", params={"type": "bearer"})

    for reply in (one, listed, by_type):
        assert reply.status_code == 200, reply.text
        assert PASSWORD not in reply.text and "tok-123456" not in reply.text
    assert one.json()["data"]["db_password"] == "[REDACTED]"
    assert [c["name"] for c in listed.json()["credentials"]] == ["api", "pg_local"]
    assert all(c["data"] is None for c in listed.json()["credentials"])
    assert [c["name"] for c in by_type.json()["credentials"]] == ["api"]
    assert (await http.delete("/api/credentials/api")).status_code == 204
    assert (await http.get("/api/credentials/api")).status_code == 404
    assert (await http.delete("/api/credentials/api")).status_code == 404


async def test_post_again_replaces_the_data(http: httpx.AsyncClient, hold: Any) -> None:
    assert (await http.post("/api/credentials", json=PG_LOCAL)).status_code == 201
    changed = {**PG_LOCAL, "data": {**PG_LOCAL["data"], "db_password": "rotated-pw"}}

    again = await http.post("/api/credentials", json=changed)
    held = await hold(http)
    resolved = await http.post("/api/internal/credentials/resolve", json={"names": ["pg_local"], **_for(held)})

    assert again.status_code == 200
    assert resolved.json()["credentials"]["pg_local"]["data"]["db_password"] == "rotated-pw"


def _for(held: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolve request that names the command the worker holds."""
    return {"event_id": held["event_id"], "worker_id": held["worker_id"]}


async def test_resolve_is_for_the_lease_holder_and_returns_clear_data(
    http: httpx.AsyncClient, hold: Any, auth: Any
) -> None:
    await http.post("/api/credentials", json=PG_LOCAL)
    held = await hold(http)
    body = {"names": ["pg_local"], **_for(held)}

    anonymous = await http.post("/api/internal/credentials/resolve", json=body, headers={"authorization": ""})
    wrong = await http.post(
        "/api/internal/credentials/resolve", json=body, headers={"authorization": "Bearer nope"}
    )
    publisher = await http.post("/api/internal/credentials/resolve", json=body, headers=auth.PUBLISHER)
    other_worker = await http.post(
        "/api/internal/credentials/resolve", json={**body, "worker_id": "not-the-holder"}, headers=auth.WORKER
    )
    no_command = await http.post("/api/internal/credentials/resolve", json={"names": ["pg_local"]})
    resolved = await http.post("/api/internal/credentials/resolve", json=body)
    missing = await http.post("/api/internal/credentials/resolve", json={**body, "names": ["pg_local", "nope"]})

    assert anonymous.status_code == 401 and wrong.status_code == 401
    assert publisher.status_code == 403 and other_worker.status_code == 403
    assert no_command.status_code == 400
    assert resolved.status_code == 200
    assert resolved.json()["credentials"]["pg_local"] == {
        "name": "pg_local",
        "credential_type": "postgres",
        "data": PG_LOCAL["data"],
    }
    assert missing.status_code == 404 and missing.json()["extra"] == {"missing": ["nope"]}


async def test_keychain_global_and_per_execution(http: httpx.AsyncClient, database_url: str, hold: Any) -> None:
    made = await http.post("/api/keychain", json={"name": "api_key", "value": "global-value-1"})
    scoped = await http.post(
        "/api/keychain", json={"name": "api_key", "value": "exec-value-2", "execution_id": 77}
    )
    shown = await http.get("/api/keychain/api_key", params={"execution_id": "77"})
    listed = await http.get("/api/keychain")
    held = await hold(http)
    own = await http.post(
        "/api/keychain", json={"name": "api_key", "value": "exec-value-3", "execution_id": held["execution_id"]}
    )
    assert own.status_code == 201
    other = await hold(http, worker_id="w2")
    for_other = await http.post("/api/internal/keychain/resolve", json={"names": ["api_key"], **_for(other)})
    # the execution named in the body is ignored: the held command says which execution
    for_held = await http.post(
        "/api/internal/keychain/resolve", json={"names": ["api_key"], "execution_id": 77, **_for(held)}
    )

    assert made.status_code == 201 and scoped.status_code == 201
    for reply in (made, scoped, shown, listed):
        assert "global-value-1" not in reply.text and "exec-value-2" not in reply.text
    assert shown.json()["value"] == "[REDACTED]" and shown.json()["execution_id"] == 77
    assert [(e["name"], e["execution_id"]) for e in listed.json()["entries"]] == [
        ("api_key", None),
        ("api_key", 77),
    ]
    assert for_other.json() == {"values": {"api_key": "global-value-1"}}
    assert for_held.json() == {"values": {"api_key": "exec-value-3"}}
    rows = await _raw(database_url, "SELECT value_enc FROM noetl.keychain")
    assert all(b"value-" not in bytes(r[0]) for r in rows)
    assert (await http.delete("/api/keychain/api_key", params={"execution_id": 77})).status_code == 204
    assert (await http.get("/api/keychain/api_key", params={"execution_id": 77})).status_code == 404
    assert (await http.get("/api/keychain/api_key")).status_code == 200


async def test_without_a_key_credentials_are_unavailable(
    database_url: str, serve_app: Any, make_settings: Any
) -> None:
    async with serve_app(make_settings(database_url)) as client:
        reply = await client.post("/api/credentials", json=PG_LOCAL)
    assert reply.status_code == 503
    assert "NOETL_CREDENTIALS_KEY" in reply.json()["detail"]


async def test_start_refuses_stored_secrets_without_a_key(
    http: httpx.AsyncClient, database_url: str, key: str
) -> None:
    await http.post("/api/credentials", json=PG_LOCAL)

    await check_key_present(database_url, key)  # the right key: fine
    with pytest.raises(ConfigError, match="NOETL_CREDENTIALS_KEY is not set, but the database holds 1"):
        await check_key_present(database_url, None)


async def test_the_service_exits_with_one_line_naming_the_variable(
    http: httpx.AsyncClient, database_url: str
) -> None:
    await http.post("/api/credentials", json=PG_LOCAL)
    env = {"NOETL_DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "NOETL_API_BIND": "127.0.0.1:1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "noetl_control_api",
        "serve",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2
    assert "configuration error: NOETL_CREDENTIALS_KEY is not set" in stderr.decode()


def test_a_malformed_key_fails_settings() -> None:
    with pytest.raises(ConfigError, match="NOETL_CREDENTIALS_KEY must be"):
        Settings.from_env({"NOETL_DATABASE_URL": "postgresql://x/y", "NOETL_CREDENTIALS_KEY": "short"})


def test_key_rotation_old_ciphertext_still_opens(key: str) -> None:
    from noetl_control_api.application import SecretBox

    sealed = SecretBox(key).seal({"a": 1})
    rotated = SecretBox(f"{Fernet.generate_key().decode()},{key}")
    assert rotated.open(sealed) == {"a": 1}
    assert msgspec.json.decode(Fernet(key.encode()).decrypt(sealed)) == {"a": 1}


@pytest.mark.parametrize("name", ["", "a/b", "has space", "x" * 201, "tab\there"])
async def test_names_must_be_path_segments(http: httpx.AsyncClient, name: str) -> None:
    reply = await http.post("/api/credentials", json={**PG_LOCAL, "name": name})
    keychain = await http.post("/api/keychain", json={"name": name, "value": "v"})

    assert reply.status_code == 400 and reply.json()["error"] == "validation_error"
    assert keychain.status_code == 400
