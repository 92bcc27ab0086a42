"""The root ``keychain:`` block: parsed and validated at register, resolved per execution."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from noetl_control_api.dsl import PlaybookError, parse_playbook

CLIENT_SECRET = "cl1ent-s3cret-value"
STATIC_SECRET = "st4tic-api-key-value"

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: kc, path: tests/keychain}
workload: {api_key: "<static>", audience: reports}
keychain:
  - name: api
    kind: static
    scope: local
    map: {key: "{{ workload.api_key }}", note: plain}
  - name: svc
    kind: oauth2
    credential: svc_client
    endpoint: http://127.0.0.1:9/token
    data: {audience: "{{ workload.audience }}"}
  - name: pinned
    kind: oauth2
    credential: pinned_client
    endpoint: http://127.0.0.1:9/elsewhere
workflow:
  - step: start
    tool: {kind: noop}
""".replace("<static>", STATIC_SECRET)


def _doc(block: str) -> str:
    return (
        "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: a, path: a}\n"
        f"{block}\nworkflow:\n  - step: start\n"
    )


def test_block_parses_the_kinds_upstream_declares() -> None:
    playbook = parse_playbook(PLAYBOOK)

    api, svc, pinned = playbook.keychain
    assert (api.name, api.kind, api.map) == ("api", "static", {"key": "{{ workload.api_key }}", "note": "plain"})
    assert (svc.kind, svc.credential, svc.endpoint, svc.method) == (
        "oauth2",
        "svc_client",
        "http://127.0.0.1:9/token",
        "POST",
    )
    assert playbook.keychain_entry("pinned") is pinned and playbook.keychain_entry("nope") is None
    credential = parse_playbook(_doc("keychain: [{name: pg, type: credential_ref}]")).keychain[0]
    assert (credential.kind, credential.credential) == ("credential", "pg")  # upstream: ref defaults to the name


@pytest.mark.parametrize(
    ("block", "field", "words"),
    [
        ("keychain: {a: 1}", "keychain", "must be a list"),
        ("keychain: [{name: a, kind: secret_manager, auth: x, map: {k: v}}]", "keychain.a.kind", "not supported"),
        ("keychain: [{name: a, kind: vault}]", "keychain.a.kind", "one of static"),
        ("keychain: [{name: a, kind: static, map: {k: v}, endpoint: x}]", "keychain.a.endpoint", "unknown key"),
        ("keychain: [{name: a, kind: static, map: {}}]", "keychain.a.map", "non-empty map"),
        ("keychain: [{name: a, kind: bearer, token: t}, {name: a, kind: bearer, token: u}]", "keychain[1].name", "duplicate"),
        ("keychain: [{name: 'a b', kind: bearer, token: t}]", "keychain[0].name", "letters"),
        ("keychain: [{name: a, kind: oauth2}]", "keychain.a.credential", "needs a credential"),
        ("keychain: [{name: a, kind: oauth2, endpoint: 'ftp://x'}]", "keychain.a.endpoint", "http(s) URL"),
        ("keychain: [{name: a, kind: oauth2, credential: c, method: PUT}]", "keychain.a.method", "POST or GET"),
        ("keychain: [{name: a, kind: bearer, token: t, ttl_seconds: -1}]", "keychain.a.ttl_seconds", "positive"),
        ("keychain: [{name: a, kind: bearer, token: '{{ x'}]", "keychain.a.token", "syntax"),
    ],
)
def test_block_errors_name_the_field(block: str, field: str, words: str) -> None:
    with pytest.raises(PlaybookError) as caught:
        parse_playbook(_doc(block))
    assert caught.value.field == field and words in caught.value.message


@pytest.fixture
async def http(database_url: str, serve_app: Any, make_settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = make_settings(database_url, credentials_key=Fernet.generate_key().decode())
    async with serve_app(settings) as client:
        for name, data in (
            ("svc_client", {"client_id": "reports-client", "client_secret": CLIENT_SECRET, "scope": "read"}),
            ("pinned_client", {"client_id": "p", "client_secret": "p-secret", "token_url": "http://127.0.0.1:9/token"}),
        ):
            made = await client.post("/api/credentials", json={"name": name, "credential_type": "oauth2", "data": data})
            assert made.status_code == 201, made.text
        yield client


def _for(held: dict[str, Any]) -> dict[str, Any]:
    return {"event_id": held["event_id"], "worker_id": held["worker_id"]}


async def _rows(database_url: str, execution_id: int) -> dict[str, tuple[bytes, Any]]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT name, value_enc, expires_at FROM noetl.keychain WHERE scope_id = %s", (execution_id,)
        )
        return {r[0]: (bytes(r[1]), r[2]) for r in await cur.fetchall()}


async def test_static_entry_is_rendered_and_kept_sealed_with_the_execution(
    http: httpx.AsyncClient, hold: Any, database_url: str
) -> None:
    held = await hold(http, content=PLAYBOOK, path="tests/keychain")

    first = await http.post("/api/internal/keychain/resolve", json={"names": ["api"], **_for(held)})
    again = await http.post("/api/internal/keychain/resolve", json={"names": ["api"], **_for(held)})

    assert first.status_code == 200, first.text
    assert first.json() == {"values": {"api": {"key": STATIC_SECRET, "note": "plain"}}}
    assert again.json() == first.json()
    rows = await _rows(database_url, held["execution_id"])
    assert list(rows) == ["api"] and STATIC_SECRET.encode() not in rows["api"][0]
    listed = await http.get("/api/keychain", params={"execution_id": str(held["execution_id"])})
    assert STATIC_SECRET not in listed.text and [e["name"] for e in listed.json()["entries"]] == ["api"]


async def test_oauth2_entry_asks_the_worker_to_fetch_then_serves_the_token_until_near_expiry(
    http: httpx.AsyncClient, hold: Any, database_url: str
) -> None:
    held = await hold(http, content=PLAYBOOK, path="tests/keychain")
    ask = {"names": ["svc"], **_for(held)}

    first = await http.post("/api/internal/keychain/resolve", json=ask)
    short = await http.post(
        "/api/internal/keychain/token",
        json={"name": "svc", "value": {"access_token": "tok-short-lived", "expires_in": 30}, **_for(held)},
    )
    renew = await http.post("/api/internal/keychain/resolve", json=ask)
    kept = await http.post(
        "/api/internal/keychain/token",
        json={"name": "svc", "value": {"access_token": "tok-one-hour", "expires_in": 3600}, **_for(held)},
    )
    cached = await http.post("/api/internal/keychain/resolve", json=ask)

    assert first.status_code == 200, first.text
    request = first.json()["fetch"]["svc"]
    assert first.json()["values"] == {} and first.json()["sensitive_only"] == {"svc": ["access_token"]}
    assert request == {
        "endpoint": "http://127.0.0.1:9/token",
        "method": "POST",
        "headers": {},
        "form": {
            "grant_type": "client_credentials",
            "scope": "read",
            "client_id": "reports-client",
            "client_secret": CLIENT_SECRET,
            "audience": "reports",
        },
        "token_field": "access_token",
    }
    assert short.status_code == 200, short.text
    # 30 s left is inside the renewal margin: the next resolve asks for a new token
    assert "svc" in renew.json()["fetch"] and renew.json()["values"] == {}
    assert kept.status_code == 200 and cached.json()["values"] == {"svc": {"access_token": "tok-one-hour", "expires_in": 3600}}
    assert "fetch" not in cached.json()
    (sealed, expires_at) = (await _rows(database_url, held["execution_id"]))["svc"]
    assert b"tok-one-hour" not in sealed and expires_at is not None


async def test_token_store_is_for_the_lease_holder_and_declared_oauth2_entries_only(
    http: httpx.AsyncClient, hold: Any
) -> None:
    held = await hold(http, content=PLAYBOOK, path="tests/keychain")
    other = await hold(http, content=PLAYBOOK, path="tests/keychain", worker_id="w2")
    token = {"access_token": "tok-forged-value"}

    static = await http.post("/api/internal/keychain/token", json={"name": "api", "value": token, **_for(held)})
    undeclared = await http.post("/api/internal/keychain/token", json={"name": "zzz", "value": token, **_for(held)})
    not_held = await http.post(
        "/api/internal/keychain/token",
        json={"name": "svc", "value": token, "event_id": other["event_id"], "worker_id": "w1"},
    )
    no_token = await http.post("/api/internal/keychain/token", json={"name": "svc", "value": {"x": 1}, **_for(held)})

    assert static.status_code == 403 and undeclared.status_code == 403
    assert not_held.status_code == 403, not_held.text
    assert no_token.status_code == 400 and "access_token" in no_token.json()["detail"]


async def test_a_credential_bound_to_its_token_url_cannot_be_sent_elsewhere(
    http: httpx.AsyncClient, hold: Any
) -> None:
    held = await hold(http, content=PLAYBOOK, path="tests/keychain")

    reply = await http.post("/api/internal/keychain/resolve", json={"names": ["pinned"], **_for(held)})

    assert reply.status_code == 403 and "token_url" in reply.json()["detail"]
    assert "p-secret" not in reply.text


CREDENTIAL_PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: kc2, path: tests/keychain2}
workload: {tok: bearer-value-42}
keychain:
  - {name: warehouse, kind: credential, credential: wh}
  - {name: other_team, kind: credential}
  - {name: plain, kind: bearer, token: "{{ workload.tok }}", ttl_seconds: 600}
workflow:
  - step: start
    tool: {kind: noop}
"""


async def test_credential_entries_keep_to_allowed_paths_and_bearer_entries_expire(
    http: httpx.AsyncClient, hold: Any, database_url: str
) -> None:
    for name, allowed in (("wh", ["tests"]), ("other_team", ["finance"])):
        made = await http.post(
            "/api/credentials",
            json={"name": name, "credential_type": "generic", "data": {"password": f"{name}-pw-1"}, "allowed_paths": allowed},
        )
        assert made.status_code == 201, made.text
    held = await hold(http, content=CREDENTIAL_PLAYBOOK, path="tests/keychain2")

    ok = await http.post("/api/internal/keychain/resolve", json={"names": ["warehouse", "plain"], **_for(held)})
    refused = await http.post("/api/internal/keychain/resolve", json={"names": ["other_team"], **_for(held)})

    assert ok.status_code == 200, ok.text
    assert ok.json()["values"] == {
        "warehouse": {"password": "wh-pw-1"},
        "plain": {"access_token": "bearer-value-42", "token_type": "Bearer"},
    }
    assert ok.json()["sensitive_only"] == {"warehouse": [], "plain": []}
    assert refused.status_code == 403 and "allowed_paths" in refused.json()["detail"]
    assert "other_team-pw-1" not in refused.text
    rows = await _rows(database_url, held["execution_id"])
    assert sorted(rows) == ["plain", "warehouse"]
    assert rows["warehouse"][1] is None and rows["plain"][1] is not None  # ttl_seconds
