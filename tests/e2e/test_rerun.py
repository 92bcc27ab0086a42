"""Restart from a step through the real stack: the steps before it are not run again (their
side effects, hits on a counting HTTP server, happen once), the new execution names the one
it restarts, and its own event log replays to its stored state."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest
from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev.testing import wait_for_event

Conn = psycopg.Connection[dict[str, Any]]

CHAIN = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_rerun_chain, path: e2e/rerun_chain}
workload: {counter: "http://127.0.0.1:9", broken: true}
workflow:
  - step: start
    tool: {kind: http, url: "{{ counter }}/hit/start"}
    next: {spec: {mode: exclusive}, arcs: [{step: second}]}
  - step: second
    tool: {kind: http, url: "{{ counter }}/hit/second"}
    next: {spec: {mode: exclusive}, arcs: [{step: third}]}
  - step: third
    tool:
      kind: python
      input: {broken: "{{ broken }}"}
      code: |
        if broken:
            raise ValueError("third is broken")
        result = {"fixed": True}
    next: {spec: {mode: exclusive}, arcs: [{step: end}]}
  - step: end
    tool: {kind: python, code: "result = {'done': True}"}
"""

LOOP = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_rerun_loop, path: e2e/rerun_loop}
workload: {counter: "http://127.0.0.1:9", items: [0, 1, 2, 3, 4], broken: [2, 4]}
workflow:
  - step: start
    tool: {kind: http, url: "{{ counter }}/hit/start"}
    next: {spec: {mode: exclusive}, arcs: [{step: fetch}]}
  - step: fetch
    loop: {in: "{{ items }}", iterator: item, spec: {mode: sequential}}
    tool:
      - name: check
        kind: python
        input: {item: "{{ item }}", broken: "{{ broken }}"}
        code: |
          if item in broken:
              raise ValueError(f"item {item} is broken")
          result = {"item": item}
      - name: hit
        kind: http
        url: "{{ counter }}/hit/item-{{ item }}"
    next: {spec: {mode: exclusive}, arcs: [{step: end}]}
  - step: end
    tool: {kind: python, code: "result = {'done': True}"}
"""

BIG = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_rerun_big, path: e2e/rerun_big}
workload: {broken: true}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'blob': 'x' * 150000}"}
    next: {spec: {mode: exclusive}, arcs: [{step: check}]}
  - step: check
    tool:
      kind: python
      input: {blob: "{{ start.blob }}", broken: "{{ broken }}"}
      code: |
        if broken:
            raise ValueError("check is broken")
        result = {"size": len(blob)}
"""


@pytest.fixture
def counter(stack: Stack) -> Iterator[tuple[str, Counter[str]]]:
    """An HTTP server counting ``GET /hit/NAME`` per name: (base URL, the counts). The local
    stack only: its workers reach this server on loopback."""
    hits: Counter[str] = Counter()
    lock = threading.Lock()

    class Hit(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            name = self.path.removeprefix("/hit/")
            with lock:
                hits[name] += 1
            body = json.dumps({"name": name}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hit)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http(api_url: str, auth: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, headers=auth, timeout=30) as client:
        yield client


def _ended(api: Api, db: Conn, execution_id: int | str, status: str) -> list[dict[str, Any]]:
    """Wait for the execution to end with ``status`` and its end to reach the event log."""
    final = api.wait(execution_id, timeout=90)
    assert final["status"] == status, final
    terminal = {"COMPLETED": "playbook.completed", "FAILED": "playbook.failed"}[status]
    return wait_for_event(db, int(execution_id), terminal, timeout=60)


def _steps(events: list[dict[str, Any]], event_type: str) -> list[str]:
    return [e["step"] for e in events if e["event_type"] == event_type]


def _iterations(events: list[dict[str, Any]], event_type: str) -> list[int]:
    return [
        e["meta"]["command_meta"]["iteration"]
        for e in events
        if e["event_type"] == event_type and e["step"] == "fetch"
    ]


def _replays(http: httpx.Client, execution_id: int | str) -> None:
    replayed = http.get(f"/api/executions/{execution_id}/replay").json()
    assert replayed["log_complete"], replayed
    assert replayed["matches"], replayed["differences"]


def _rerun(http: httpx.Client, execution_id: int | str, **body: Any) -> dict[str, Any]:
    reply = http.post(f"/api/executions/{execution_id}/rerun", json=body)
    assert reply.status_code == (200 if body.get("dry_run") else 201), reply.text
    data: dict[str, Any] = reply.json()
    return data


def test_a_rerun_from_the_failed_step_completes_without_running_the_steps_before_it(
    api: Api, db: Conn, http: httpx.Client, counter: tuple[str, Counter[str]], cli: Callable[..., Any]
) -> None:
    url, hits = counter
    api.register(CHAIN)
    old = api.execute("e2e/rerun_chain", payload={"counter": url})["execution_id"]
    _ended(api, db, old, "FAILED")
    assert hits == {"start": 1, "second": 1}

    listed = cli("rerun", str(old), "--from", "third", "--dry-run", "-o", "json")
    assert listed.code == 0, listed.stderr
    plan = {
        "rerun_of": str(old),
        "from_step": "third",
        "reused": ["start", "second"],
        "rerun": ["third", "end"],
    }
    assert json.loads(listed.stdout) == plan
    assert _rerun(http, old, from_step="third", dry_run=True) == plan
    assert db.execute("SELECT count(*) AS n FROM noetl.execution WHERE rerun_of = %s", (old,)).fetchone() == {
        "n": 0
    }

    started = _rerun(http, old, from_step="third", workload={"broken": False})

    new = started["execution_id"]
    assert started == {**plan, "execution_id": new}
    events = _ended(api, db, new, "COMPLETED")
    assert hits == {"start": 1, "second": 1}  # steps 1-2 did not run again
    assert _steps(events, "step.reused") == ["start", "second"]
    assert _steps(events, "command.issued") == ["third", "end"]
    reused = next(e for e in events if e["event_type"] == "step.reused")
    assert reused["context"]["reused_from"]["execution_id"] == int(old)
    shown = http.get(f"/api/executions/{new}").json()
    assert shown["rerun_of"] == str(old) and shown["results"]["third"]["fixed"] is True
    assert {"start", "second", "third", "end"} <= set(shown["results"])
    assert http.get(f"/api/executions/{old}").json()["rerun_of"] is None
    listing = http.get("/api/executions", params={"path": "e2e/rerun_chain", "limit": 10}).json()
    assert {e["execution_id"]: e["rerun_of"] for e in listing["executions"]}[int(new)] == str(old)
    paged = http.get("/api/executions", params={"path": "e2e/rerun_chain", "page": 1, "page_size": 10}).json()
    assert {e["execution_id"]: e["rerun_of"] for e in paged}[str(new)] == str(old)  # upstream's page shape
    _replays(http, new)


def test_failed_iterations_only_runs_just_the_iterations_that_did_not_complete(
    api: Api, db: Conn, http: httpx.Client, counter: tuple[str, Counter[str]]
) -> None:
    url, hits = counter
    api.register(LOOP)
    first = api.execute("e2e/rerun_loop", payload={"counter": url})["execution_id"]
    _ended(api, db, first, "FAILED")  # item 2 fails; the loop is sequential, so 3 and 4 never ran
    assert hits == {"start": 1, "item-0": 1, "item-1": 1}

    # item 2 fixed, 4 still broken: the rerun reuses 0 and 1, runs 2 and 3, fails on 4
    second = _rerun(http, first, from_step="fetch", failed_iterations_only=True, workload={"broken": [4]})
    assert second["reused"] == ["start", "fetch"] and second["rerun"] == ["fetch", "end"]
    events = _ended(api, db, second["execution_id"], "FAILED")
    assert _iterations(events, "step.reused") == [0, 1]
    assert _iterations(events, "command.issued") == [2, 3, 4]
    _replays(http, second["execution_id"])

    # a rerun of the rerun: 0 and 1 come from its step.reused, 2 and 3 from its commands
    third = _rerun(
        http, second["execution_id"], from_step="fetch", failed_iterations_only=True, workload={"broken": []}
    )
    events = _ended(api, db, third["execution_id"], "COMPLETED")
    assert _iterations(events, "step.reused") == [0, 1, 2, 3]
    assert _iterations(events, "command.issued") == [4]
    assert hits == {"start": 1, **{f"item-{i}": 1 for i in range(5)}}  # every side effect once
    shown = http.get(f"/api/executions/{third['execution_id']}").json()
    fetched = shown["results"]["fetch"]["results"]  # in input order, reused and new alike
    assert [f'"item-{i}"' in json.dumps(r) for i, r in enumerate(fetched)] == [True] * 5, fetched
    assert shown["rerun_of"] == second["execution_id"]
    _replays(http, third["execution_id"])


def test_a_rerun_names_its_errors(api: Api, db: Conn, http: httpx.Client) -> None:
    assert http.post("/api/executions/1/rerun", json={"from_step": "start"}).status_code == 404
    slow = api.execute("e2e/slow", payload={"seconds": 30})["execution_id"]
    try:
        running = http.post(f"/api/executions/{slow}/rerun", json={"from_step": "start"})
        assert running.status_code == 409, running.text
    finally:
        api.cancel(slow, "test over")
    failed = api.execute("e2e/fail")["execution_id"]
    _ended(api, db, failed, "FAILED")
    unknown = http.post(f"/api/executions/{failed}/rerun", json={"from_step": "nowhere", "dry_run": True})
    assert unknown.status_code == 422 and "nowhere" in unknown.json()["detail"], unknown.text
    not_a_loop = http.post(
        f"/api/executions/{failed}/rerun", json={"from_step": "explode", "failed_iterations_only": True}
    )
    assert not_a_loop.status_code == 422, not_a_loop.text


def test_a_reused_result_in_the_result_store_is_kept_under_the_rerun(
    api: Api, db: Conn, http: httpx.Client
) -> None:
    """Retention purges the earlier execution first: the rerun's log must not need its results."""
    api.register(BIG)
    old = api.execute("e2e/rerun_big")["execution_id"]
    _ended(api, db, old, "FAILED")

    new = _rerun(http, old, from_step="check", workload={"broken": False})["execution_id"]

    events = _ended(api, db, new, "COMPLETED")
    assert http.get(f"/api/executions/{new}").json()["results"]["check"]["size"] == 150_000
    (reused,) = [e for e in events if e["event_type"] == "step.reused"]
    assert reused["context"]["result"]["$ref"]["key"].startswith(f"{new}/")
    db.execute("DELETE FROM noetl.result_store WHERE execution_id = %s", (int(old),))
    _replays(http, new)
