"""The root ``keychain:`` block through the real stack: an http step calls a local server with
the bearer token of an oauth2 client-credentials entry, and neither the token nor the client
secret reaches the event log, the results, an API reply or a log line."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import psycopg
import pytest
from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev.testing import JsonHandler, local_http, url_of, wait_for_event

Conn = psycopg.Connection[dict[str, Any]]

CLIENT_ID = f"e2e-client-{uuid.uuid4().hex[:8]}"
CLIENT_SECRET = f"secret-{uuid.uuid4().hex}"
TOKEN = f"tok{uuid.uuid4().hex}{uuid.uuid4().hex}"  # no pattern matches it: only redaction can hide it

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_keychain, path: e2e/keychain}
workload: {base: ""}
keychain:
  - name: reports_api
    kind: oauth2
    scope: local
    credential: e2e_oauth_client
    endpoint: "{{ workload.base }}/oauth/token"
    data: {scope: reports.read}
workflow:
  - step: start
    tool:
      kind: http
      method: GET
      url: "{{ workload.base }}/reports"
      headers: {Authorization: "Bearer {{ keychain.reports_api.access_token }}"}
    next: {spec: {mode: exclusive}, arcs: [{step: again}]}
  - step: again
    tool:
      kind: http
      method: GET
      url: "{{ workload.base }}/reports"
      headers: {Authorization: "Bearer {{ keychain['reports_api'].access_token }}"}
    next: {spec: {mode: exclusive}, arcs: [{step: end}]}
  - step: end
    tool:
      kind: python
      input: {seen: "{{ start.body }}"}
      code: |
        result = {"seen": seen}
"""


class Handler(JsonHandler):
    """``POST /oauth/token``: a client-credentials token for the right client; ``GET /reports``:
    200 with the Authorization it got for the right bearer token, else 401."""

    server: Server

    def do_POST(self) -> None:
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode()).items()}
        self.server.token_requests.append(form)
        if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
            return self.send_json(401, {"error": "invalid_client"})
        self.send_json(200, {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 3600})

    def do_GET(self) -> None:
        sent = self.headers.get("Authorization")
        self.server.api_auth.append(sent)
        if sent != f"Bearer {TOKEN}":
            return self.send_json(401, {"error": "bad token"})
        # the bare token, which no pattern recognises: only the worker's redaction can hide it
        self.send_json(200, {"rows": 3, "echo": TOKEN})



class Server(ThreadingHTTPServer):
    token_requests: list[dict[str, str]]
    api_auth: list[str | None]


@pytest.fixture
def server() -> Iterator[Server]:
    with local_http(Handler, Server) as started:
        started.token_requests, started.api_auth = [], []
        yield started


def _leaks(where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, needle in (("token", TOKEN), ("client secret", CLIENT_SECRET)) if needle in text]


def test_an_http_step_sends_the_oauth2_token_of_the_keychain_block_and_it_stays_out_of_the_log(
    stack: Stack, api: Api, db: Conn, server: Server
) -> None:
    base = url_of(server)
    replies: list[tuple[str, str]] = []
    with httpx.Client(base_url=stack.api_url, timeout=30, headers=stack.auth()) as http:

        def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
            reply = http.request(method, path, **kwargs)
            replies.append((f"{method} {path}", reply.text))
            return reply

        credential = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
        made = call("POST", "/api/credentials", json={"name": "e2e_oauth_client", "type": "oauth2", "data": credential})
        assert made.status_code in (200, 201), made.text
        assert call("POST", "/api/catalog/register", json={"content": PLAYBOOK}).status_code == 201
        started = call("POST", "/api/execute", json={"path": "e2e/keychain", "payload": {"base": base}})
        assert started.status_code == 201, started.text
        execution_id = int(started.json()["execution_id"])
        final = api.wait(execution_id, timeout=60)
        assert final["status"] == "COMPLETED", final
        events = wait_for_event(db, execution_id, "playbook.completed", timeout=30)
        for path in (
            f"/api/executions/{execution_id}",
            f"/api/executions/{execution_id}/events",
            f"/api/keychain?execution_id={execution_id}",
            f"/api/keychain/reports_api?execution_id={execution_id}",
        ):
            assert call("GET", path).status_code == 200, path

    # one token request with the credential's client, then the stored token for both calls
    assert server.token_requests == [
        {"grant_type": "client_credentials", "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "scope": "reports.read"}
    ]
    assert server.api_auth == [f"Bearer {TOKEN}", f"Bearer {TOKEN}"]
    # the server echoed the token: the result carries it redacted, downstream too
    assert final["results"]["start"]["body"] == {"rows": 3, "echo": "[REDACTED]"}, final["results"]["start"]
    assert "[REDACTED]" in str(final["results"]["end"]["seen"])
    stored = db.execute(
        "SELECT name, value_enc, expires_at FROM noetl.keychain WHERE scope_id = %s", (execution_id,)
    ).fetchall()
    assert [r["name"] for r in stored] == ["reports_api"] and stored[0]["expires_at"] is not None
    rows = db.execute(
        "SELECT event_type, coalesce(context::text, '') || coalesce(meta::text, '') AS body FROM noetl.event"
        " WHERE execution_id = %s",
        (execution_id,),
    ).fetchall()
    assert rows and len(rows) == len(events)
    results = db.execute(
        "SELECT coalesce(result::text, '') || coalesce(state::text, '') AS body FROM noetl.execution"
        " WHERE execution_id = %s",
        (execution_id,),
    ).fetchall()
    leaks = _leaks("sealed keychain row", bytes(stored[0]["value_enc"]).decode(errors="replace"))
    for where, text in replies:
        leaks += _leaks(f"API reply {where}", text)
    for row in rows:
        leaks += _leaks(f"noetl.event {row['event_type']}", row["body"])
    leaks += _leaks("noetl.execution", results[0]["body"])
    for log in sorted(Path(stack.logs_dir).glob("*.log")):
        for number, line in enumerate(log.read_text(errors="replace").splitlines(), start=1):
            leaks += _leaks(f"{log.name}:{number}", line)
    assert not leaks, "\n".join(leaks[:40])
