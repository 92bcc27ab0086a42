"""Authentication and roles: every route is owned, tokens are hashed, the policy is the only judge."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from noetl_control_api.application import OidcSettings, Principal, RoleTable

PUBLIC = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/api/health")}
#: the run inspector's sign-in form and its two static files (no data)
PUBLIC_UI = {("GET", "/ui/login"), ("POST", "/ui/login"), ("GET", "/ui/static/1")}
HUMAN_ROLES = ("viewer", "operator", "developer", "admin")

SYSTEM_PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: steal, path: system/steal}
workflow:
  - step: start
    tool: {kind: python, code: "import os; result = dict(os.environ)"}
"""


def _routes(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, concrete path, opt) of every route handler the app serves, OpenAPI aside."""
    found = []
    for route in app.routes:
        if route.path.startswith("/schema"):
            continue
        path = re.sub(r"\{[^}]+\}", "1", route.path)
        for handler in getattr(route, "route_handlers", []):
            for method in sorted(set(handler.http_methods) - {"OPTIONS", "HEAD"}):
                found.append((method, path, dict(handler.opt)))
    return found


async def _token(api: Any, name: str, role: str, pool: str | None = None, **extra: Any) -> dict[str, str]:
    made = await api.client.post("/api/tokens", json={"name": name, "role": role, "pool": pool, **extra})
    assert made.status_code == 201, made.text
    return {"authorization": f"Bearer {made.json()['token']}"}


async def test_every_route_names_an_action_or_is_public(api: Any) -> None:
    routes = _routes(api.client.app)
    assert len(routes) >= 45, routes
    for method, path, opt in routes:
        if (method, path) in PUBLIC | PUBLIC_UI:
            assert opt.get("public") is True, (method, path)
        else:
            assert opt.get("action"), f"{method} {path} names no action"
            assert not opt.get("public"), (method, path)


async def test_every_owned_route_refuses_a_missing_or_unknown_credential(api: Any) -> None:
    for method, path, opt in _routes(api.client.app):
        if opt.get("public"):
            status = (await api.client.request(method, path, headers={"authorization": ""})).status_code
            # the sign-in form refuses a post without its CSRF field; no asset is named "1"
            assert status < 400 or ((method, path) in PUBLIC_UI and status in (403, 404)), (method, path)
            continue
        for headers in (
            {"authorization": ""},
            {"authorization": "Bearer noetl_" + "x" * 43},
            {"authorization": "Bearer wrong"},
            {"authorization": "Basic " + base64.b64encode(b"admin:admin").decode()},
        ):
            reply = await api.client.request(method, path, content=b"{}", headers=headers)
            if opt.get("ui"):  # a page sends the browser to the sign-in form instead
                assert reply.status_code == 303 and reply.headers["location"] == "/ui/login", (method, path)
                continue
            assert reply.status_code == 401, (method, path, headers, reply.text)
            assert reply.json()["error"] == "unauthenticated"
            assert reply.headers["www-authenticate"].startswith("Bearer")


async def test_each_role_reaches_only_its_routes(api: Any, auth: Any) -> None:
    """Route by route, a role not granted the route's action gets 403 before the handler runs."""
    principals = {role: await _token(api, f"t-{role}", role) for role in HUMAN_ROLES}
    principals["worker"] = auth.WORKER
    principals["publisher"] = auth.PUBLISHER
    principals["projector"] = auth.PROJECTOR
    policy = RoleTable()
    who = {
        role: Principal(**(await api.client.get("/api/auth/whoami", headers=headers)).json())
        for role, headers in principals.items()
    }
    for method, path, opt in _routes(api.client.app):
        if opt.get("public"):
            continue
        for role, headers in principals.items():
            reply = await api.client.request(method, path, content=b"{}", headers=headers)
            allowed = any(policy.allows(who[role], action) for action in opt["action"])
            if allowed:
                # past the route check: any 403 now is about the data (a path, a lease), not the route
                extra = reply.json().get("extra") or {} if reply.status_code == 403 else {}
                route_refusal = extra.get("action") in opt["action"] and "path" not in extra
                assert reply.status_code != 401 and not route_refusal, (role, method, path, reply.text)
            else:
                assert reply.status_code == 403, (role, method, path, reply.status_code, reply.text)
                assert reply.json()["extra"]["role"] == role


async def test_tokens_are_shown_once_stored_hashed_and_revocable(api: Any, make_settings: Any) -> None:
    made = await api.client.post(
        "/api/tokens", json={"name": "ci-bot", "role": "operator", "expires_in_seconds": 3600}
    )
    assert made.status_code == 201
    token = made.json()["token"]
    assert re.fullmatch(r"noetl_[A-Za-z0-9_-]{43}", token)
    headers = {"authorization": f"Bearer {token}"}
    who = (await api.client.get("/api/auth/whoami", headers=headers)).json()
    assert (who["name"], who["role"], who["source"]) == ("ci-bot", "operator", "token")

    listed = await api.client.get("/api/tokens")
    assert token not in listed.text
    assert {"ci-bot", "bootstrap-admin", "service:worker-shared"} <= {t["name"] for t in listed.json()["tokens"]}
    cur = await api.db.execute("SELECT token_hash FROM noetl.api_token WHERE name = 'ci-bot'")
    (stored,) = await cur.fetchone()
    assert token.encode() not in bytes(stored) and len(bytes(stored)) == 32

    again = await api.client.post("/api/tokens", json={"name": "ci-bot", "role": "viewer"})
    assert again.status_code == 409
    revoked = await api.client.delete("/api/tokens/ci-bot")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    after = await api.client.get("/api/auth/whoami", headers=headers)
    assert after.status_code == 401
    assert (await api.client.delete("/api/tokens/ci-bot")).status_code == 404
    assert (await api.client.delete("/api/tokens/bootstrap-admin")).status_code == 409


async def test_an_expired_token_is_refused(api: Any) -> None:
    headers = await _token(api, "short-lived", "viewer", expires_in_seconds=60)
    live = await _token(api, "long-lived", "viewer", expires_in_seconds=3600)
    await api.db.execute("UPDATE noetl.api_token SET expires_at = now() - interval '1 s' WHERE name = 'short-lived'")
    assert (await api.client.get("/api/catalog/list", headers=headers)).status_code == 401
    assert (await api.client.get("/api/catalog/list", headers=live)).status_code == 200


async def test_token_requests_are_validated(api: Any) -> None:
    for body in (
        {"name": "x", "role": "root"},
        {"name": "x", "role": "worker"},
        {"name": "x", "role": "viewer", "pool": "shared"},
        {"name": "bad name", "role": "viewer"},
        {"name": "x", "role": "viewer", "expires_in_seconds": 1},
    ):
        reply = await api.client.post("/api/tokens", json=body)
        assert reply.status_code == 400, (body, reply.text)


async def test_last_used_is_recorded(api: Any) -> None:
    headers = await _token(api, "used", "viewer")
    await api.client.get("/api/catalog/list", headers=headers)
    await api.client.app.state.services.tokens.flush()
    cur = await api.db.execute("SELECT last_used_at FROM noetl.api_token WHERE name = 'used'")
    assert (await cur.fetchone())[0] is not None


async def test_the_system_namespace_is_the_admins(api: Any) -> None:
    viewer = await _token(api, "v", "viewer")
    operator = await _token(api, "o", "operator")
    developer = await _token(api, "d", "developer")
    body = {"content": SYSTEM_PLAYBOOK}
    assert (await api.client.post("/api/catalog/register", json=body, headers=viewer)).status_code == 403
    assert (await api.client.post("/api/catalog/register", json=body, headers=operator)).status_code == 403
    refused = await api.client.post("/api/catalog/register", json=body, headers=developer)
    assert refused.status_code == 403 and "system/steal" in refused.text
    own = await api.client.post("/api/catalog/register", json={"content": api.linear}, headers=developer)
    assert own.status_code == 201
    assert (await api.client.post("/api/catalog/register", json=body)).status_code == 201  # the admin
    started = await api.client.post("/api/execute", json={"path": "system/steal"}, headers=developer)
    assert started.status_code == 403
    assert (await api.client.post("/api/execute", json={"path": "tests/linear"}, headers=operator)).status_code == 201
    assert (await api.client.post("/api/execute", json={"path": "tests/linear"}, headers=viewer)).status_code == 403


async def test_a_worker_claims_only_its_pool_and_posts_only_for_its_lease(api: Any, auth: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    other_pool = await api.client.post(
        f"/api/commands/{command['event_id']}/claim", json={"worker_id": "s1"}, headers=auth.SYSTEM_WORKER
    )
    assert other_pool.status_code == 403 and (await api.open_commands(execution_id))[0]["status"] == "PENDING"
    held = await api.hold(execution_id, "w1")
    forged = {
        "execution_id": execution_id,
        "event_type": "command.completed",
        "step": held["step"],
        "meta": {"command_id": held["command_id"], "attempt": held["attempt"]},
        "context": {"result": {"forged": True}},
        "event_id": api.ids.next_id(),
    }
    for headers in (auth.SYSTEM_WORKER, await _token(api, "w-shared-2", "worker", "shared")):
        reply = await api.client.post("/api/events", json=forged, headers=headers)
        assert reply.status_code == 403, reply.text
    as_other_worker = await api.client.post("/api/events", json={**forged, "worker_id": "w2"})
    assert as_other_worker.status_code == 403
    for headers in (auth.ADMIN, auth.PUBLISHER):
        assert (await api.client.post("/api/events", json=forged, headers=headers)).status_code == 403
    view = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert view["results"] == {} and (await api.open_commands(execution_id))[0]["status"] == "CLAIMED"
    genuine = await api.client.post("/api/events", json={**forged, "worker_id": "w1", "context": {"result": 1}})
    assert genuine.status_code == 200 and genuine.json()["accepted"] == 1


async def test_a_worker_starts_only_children_of_what_it_holds(api: Any, auth: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    body = {"path": "tests/linear", "parent_execution_id": execution_id}
    assert (await api.client.post("/api/execute", json={"path": "tests/linear"}, headers=auth.WORKER)).status_code == 403
    assert (await api.client.post("/api/execute", json=body, headers=auth.WORKER)).status_code == 403
    await api.hold(execution_id)
    assert (await api.client.post("/api/execute", json=body, headers=auth.WORKER)).status_code == 201


async def test_credentials_are_scoped_to_playbook_paths(api: Any, hold: Any, make_settings: Any, serve_app: Any) -> None:
    from cryptography.fernet import Fernet

    async with serve_app(make_settings(api.client.database_url, credentials_key=Fernet.generate_key().decode())) as http:
        for name, allowed in (("for-tests", ["tests"]), ("for-etl", ["etl/"]), ("unscoped", None), ("any", ["*"])):
            made = await http.post(
                "/api/credentials", json={"name": name, "data": {"token": "t0ps3cret"}, "allowed_paths": allowed}
            )
            assert made.status_code == 201, made.text
        held = await hold(http)
        ask = {"event_id": held["event_id"], "worker_id": held["worker_id"]}
        ok = await http.post("/api/internal/credentials/resolve", json={"names": ["for-tests", "unscoped", "any"], **ask})
        assert ok.status_code == 200 and set(ok.json()["credentials"]) == {"for-tests", "unscoped", "any"}
        refused = await http.post("/api/internal/credentials/resolve", json={"names": ["for-etl"], **ask})
        assert refused.status_code == 403 and "tests/linear" in refused.json()["detail"]
        assert "t0ps3cret" not in refused.text
        for bad in ([], ["../x"], [""]):
            reply = await http.post("/api/credentials", json={"name": "b", "data": {}, "allowed_paths": bad})
            assert reply.status_code == 400


async def test_open_event_streams_are_capped_per_principal(api: Any, make_settings: Any, serve_app: Any) -> None:
    async with serve_app(make_settings(api.client.database_url, sse_max_streams_per_principal=2)) as http:
        await http.post("/api/catalog/register", json={"content": api.linear})
        execution_id = (await http.post("/api/execute", json={"path": "tests/linear"})).json()["execution_id"]
        admin = Principal(**(await http.get("/api/auth/whoami")).json())
        limits = http.app.state.services.stream_limits
        held = [limits.acquire(admin), limits.acquire(admin)]  # two streams the admin has open
        url = f"/api/executions/{execution_id}/stream"
        third = await http.get(url)
        assert third.status_code == 429 and third.json()["error"] == "too_many_streams"
        assert "NOETL_SSE_MAX_STREAMS_PER_PRINCIPAL" in third.json()["detail"]
        reader = await http.post("/api/tokens", json={"name": "reader", "role": "viewer"})
        other = Principal(name="reader", role="viewer")
        assert limits.acquire(other) is not None  # another principal is not affected
        for slot in held:
            slot.release()
            slot.release()  # idempotent
        assert limits.open == 1 and reader.status_code == 201


def test_a_stream_slot_comes_back_when_its_body_is_dropped_unstarted() -> None:
    """A client that leaves before the first byte: the response body is never iterated."""
    from noetl_control_api.application import StreamLimits

    limits = StreamLimits(total=10, per_principal=1)
    principal = Principal(name="p", role="viewer")

    async def body() -> AsyncIterator[str]:
        yield "never"

    slot = limits.acquire(principal)
    generator = body()
    slot.bind(generator)
    assert limits.open == 1
    del generator
    assert limits.open == 0
    limits.acquire(principal)  # the place is free again


# -- OIDC -------------------------------------------------------------------------------------


class _Issuer:
    """A JWKS (and discovery document) served on loopback, with the key pair that signs tokens."""

    def __init__(self) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public = jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks = {"keys": [{**public, "kid": "k1", "use": "sig", "alg": "RS256"}]}
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body: dict[str, Any]
                if self.path == "/.well-known/openid-configuration":
                    body = {"issuer": issuer.url, "jwks_uri": issuer.url + "/jwks"}
                elif self.path == "/jwks":
                    body = issuer.jwks
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def token(self, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.url, "aud": "noetl", "sub": "alice", "iat": now, "exp": now + 300, **claims}
        return jwt.encode(body, self.key, algorithm="RS256", headers={"kid": "k1"})


@pytest.fixture
def issuer() -> Iterator[_Issuer]:
    served = _Issuer()
    yield served
    served.server.shutdown()


@pytest.fixture
async def oidc_app(issuer: _Issuer, database_url: str, make_settings: Any, serve_app: Any) -> AsyncIterator[Any]:
    settings = make_settings(database_url, oidc=OidcSettings(issuer=issuer.url, audience="noetl"))
    async with serve_app(settings) as http:
        yield http


async def test_oidc_tokens_carry_their_role(issuer: _Issuer, oidc_app: httpx.AsyncClient) -> None:
    def bearer(token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}

    viewer = bearer(issuer.token(noetl_role="viewer"))
    who = await oidc_app.get("/api/auth/whoami", headers=viewer)
    assert who.status_code == 200 and who.json()["name"] == "oidc:alice" and who.json()["role"] == "viewer"
    assert (await oidc_app.get("/api/catalog/list", headers=viewer)).status_code == 200
    assert (await oidc_app.post("/api/tokens", json={"name": "n", "role": "admin"}, headers=viewer)).status_code == 403
    highest = bearer(issuer.token(noetl_role=["viewer", "developer"]))
    assert (await oidc_app.get("/api/auth/whoami", headers=highest)).json()["role"] == "developer"
    # no service role through OIDC: the token authenticates, and may do nothing
    service = bearer(issuer.token(noetl_role="worker"))
    assert (await oidc_app.get("/api/catalog/list", headers=service)).status_code == 403

    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    refused = [
        issuer.token(noetl_role="admin", aud="someone-else"),
        issuer.token(noetl_role="admin", iss="https://evil.example"),
        issuer.token(noetl_role="admin", exp=int(time.time()) - 3600),
        jwt.encode(
            {"iss": issuer.url, "aud": "noetl", "sub": "x", "exp": int(time.time()) + 60, "noetl_role": "admin"},
            stranger,
            algorithm="RS256",
            headers={"kid": "k1"},
        ),
        jwt.encode(
            {"iss": issuer.url, "aud": "noetl", "sub": "x", "exp": int(time.time()) + 60, "noetl_role": "admin"},
            "a-shared-secret-that-is-long-enough-for-hs256",
            algorithm="HS256",
            headers={"kid": "k1"},
        ),
    ]
    for token in refused:
        reply = await oidc_app.get("/api/auth/whoami", headers=bearer(token))
        assert reply.status_code == 401, token


def test_the_route_table_of_the_security_docs_lists_every_route_with_its_action(api: Any) -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "security.md").read_text()
    documented = {
        (m.group(1), m.group(2)): m.group(3)
        for m in re.finditer(r"^\| `([A-Z]+) (/[^`]*)` \| ([^|]*) \|", docs, re.M)
    }
    served = {}
    for method, path, opt in _routes(api.client.app):
        template = next(  # the route's own template, its path parameters without types
            re.sub(r":[a-z]+\}", "}", route.path)
            for route in api.client.app.routes
            if re.sub(r"\{[^}]+\}", "1", route.path) == path
        )
        served[(method, template)] = "—" if opt.get("public") else ", ".join(f"`{a}`" for a in opt["action"])
    assert {k: v.strip() for k, v in documented.items()} == served
