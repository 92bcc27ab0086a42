"""Secrets never leave in clear: not in an API reply, an event row, a NATS message or a log line.

A credential holds a value that looks like nothing (only the worker's memory of what it resolved
can redact it), and the execution's payload carries values that look like secrets (a Bearer
token, a JWT, a PEM private key), which a python step passes on in its result. Every NATS
message of the run is captured with a core subscription on ``noetl.>`` (NOETL_COMMANDS is a
work queue: acked messages leave the stream, so reading the stream afterwards would miss them).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import httpx
import nats
import psycopg
from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev.testing import wait_for_event

Conn = psycopg.Connection[dict[str, Any]]

PLAIN = f"plain-{uuid.uuid4().hex}"  # no pattern matches it: only the worker's redaction can
BEARER = f"Bearer {uuid.uuid4().hex}{uuid.uuid4().hex}"
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJlMmUtc2VjcmV0cyJ9." + uuid.uuid4().hex
PEM_BODY = uuid.uuid4().hex * 3
PEM = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
NEEDLES = {"credential value": PLAIN, "bearer": BEARER.split()[1], "jwt": JWT, "pem": PEM_BODY}

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_secrets, path: e2e/secrets}
workload: {header: "", jwt: "", pem: ""}
workflow:
  - step: start
    tool:
      kind: python
      input: {header: "{{ header }}", jwt: "{{ jwt }}", pem: "{{ pem }}"}
      code: |
        result = {"h": header, "j": jwt, "p": pem, "note": "sent with " + header + " and " + jwt}
    next: {spec: {mode: exclusive}, arcs: [{step: read}]}
  - step: read
    tool: {kind: secrets, credential: e2e_plain_secret}
    next: {spec: {mode: exclusive}, arcs: [{step: end}]}
  - step: end
    tool:
      kind: python
      input: {seen: "{{ read }}", earlier: "{{ start }}"}
      code: |
        result = {"seen": seen, "earlier": earlier}
"""


class Capture:
    """Every message published on noetl.> while it runs (a thread with its own event loop)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.messages: list[bytes] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(
            target=self._loop.run_until_complete, args=(self._run(),), daemon=True
        )

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        nc = await nats.connect(self.url)

        async def keep(msg: Any) -> None:
            self.messages.append(bytes(msg.data) + b"\n" + repr(msg.headers).encode())

        await nc.subscribe("noetl.>", cb=keep)
        await nc.flush()
        self._ready.set()
        await self._stop.wait()
        await nc.flush()
        await nc.close()

    def __enter__(self) -> Capture:
        self._thread.start()
        assert self._ready.wait(15), "could not subscribe to NATS"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(15)


def _leaks(where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, needle in NEEDLES.items() if needle in text]


def test_secrets_never_appear_in_clear(stack: Stack, api: Api, db: Conn) -> None:
    assert stack.nats_url is not None
    replies: list[tuple[str, str]] = []
    with Capture(stack.nats_url) as capture, httpx.Client(base_url=stack.api_url, timeout=30, headers=stack.auth()) as http:

        def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
            reply = http.request(method, path, **kwargs)
            replies.append((f"{method} {path}", reply.text))
            return reply

        created = call(
            "POST",
            "/api/credentials",
            json={"name": "e2e_plain_secret", "credential_type": "generic", "data": {"api_value": PLAIN}},
        )
        assert created.status_code in (200, 201), created.text
        assert call("POST", "/api/catalog/register", json={"content": PLAYBOOK}).status_code == 201
        started = call(
            "POST",
            "/api/execute",
            json={"path": "e2e/secrets", "payload": {"header": BEARER, "jwt": JWT, "pem": PEM}},
        )
        assert started.status_code == 201, started.text
        execution_id = int(started.json()["execution_id"])
        final = api.wait(execution_id, timeout=60)
        assert final["status"] == "COMPLETED", final
        events = wait_for_event(db, execution_id, "playbook.completed", timeout=30)
        for path in (
            f"/api/executions/{execution_id}",
            f"/api/executions/{execution_id}/events",
            f"/api/executions/{execution_id}/replay",
            "/api/executions",
            "/api/credentials",
            "/api/credentials/e2e_plain_secret",
        ):
            assert call("GET", path).status_code == 200, path
        # the pipeline really carried the values: the redaction, not an empty result, hid them
        end = final["results"]["end"]
        assert "[REDACTED]" in str(end["seen"]) and "[REDACTED]" in str(end["earlier"]), end
    rows = db.execute(
        "SELECT event_type, coalesce(context::text, '') || coalesce(meta::text, '') AS body FROM noetl.event"
        " WHERE execution_id = %s",
        (execution_id,),
    ).fetchall()
    assert len(rows) == len(events) and rows
    leaks: list[str] = []
    for where, text in replies:
        leaks += _leaks(f"API reply {where}", text)
    for row in rows:
        leaks += _leaks(f"noetl.event {row['event_type']}", row["body"])
    # noetl.execution keeps the workload in clear on purpose: the write model renders it into
    # the commands the workers run; it is never served unscrubbed
    assert capture.messages, "no NATS message was captured"
    for i, message in enumerate(capture.messages):
        leaks += _leaks(f"NATS message {i}", message.decode(errors="replace"))
    for log in sorted(Path(stack.logs_dir).glob("*.log")):
        for number, line in enumerate(log.read_text(errors="replace").splitlines(), start=1):
            leaks += _leaks(f"{log.name}:{number}", line)
    assert not leaks, "\n".join(leaks[:40])
