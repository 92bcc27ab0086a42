"""http pagination through the stack: one command fetches every page of a local paged server
(started by this test, loopback only) and the next step reads the collected rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest
from noetl_cli import Api
from noetl_dev.testing import JsonHandler, local_http, url_of, wait_for_event

Conn = psycopg.Connection[dict[str, Any]]
CALLS: Counter[str] = Counter()

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_http_pages, path: e2e/http_pages}
workload: {base: "http://127.0.0.1:1"}
workflow:
  - step: start
    tool:
      kind: http
      url: "{{ base }}/users"
      params: {page: 1}
      retry:
        - when: "{{ response.paging.hasMore }}"
          then:
            max_attempts: 10
            next_call: {params: {page: "{{ response.paging.page + 1 }}"}}
            collect: {strategy: append, path: data}
    next:
      spec: {mode: exclusive}
      arcs:
        - step: count
          when: "{{ event.name == 'call.done' and output.data.meta.iterations == 4 }}"
          input: {users: "{{ start.data }}"}
  - step: count
    tool: {kind: python, code: "result = {'n': len(users), 'last': users[-1]['name']}"}
"""


class Users(JsonHandler):
    """``/users?page=N``: four pages of three users."""

    def do_GET(self) -> None:
        url = urlparse(self.path)
        page = int(parse_qs(url.query).get("page", ["1"])[0])
        CALLS[url.path] += 1
        body = {
            "data": [{"name": f"u{(page - 1) * 3 + i}"} for i in range(3)],
            "paging": {"page": page, "hasMore": page < 4},
        }
        self.send_json(200, body)


@pytest.fixture
def users_url() -> Iterator[str]:
    with local_http(Users, ThreadingHTTPServer) as server:
        yield url_of(server)


def test_pages_are_fetched_in_one_command_and_collected(api: Api, db: Conn, users_url: str) -> None:
    entry = api.register(PLAYBOOK)
    started = api.execute(entry["path"], payload={"base": users_url}, version=entry["version"])
    execution_id = int(started["execution_id"])
    final = api.wait(execution_id, timeout=90)

    assert final["status"] == "COMPLETED", final.get("error")
    assert final["results"]["count"] == {"n": 12, "last": "u11"}
    start = final["results"]["start"]
    assert start["meta"] == {"iterations": 4, "collect_strategy": "append", "status_codes": [200] * 4}
    assert CALLS["/users"] == 4
    events = wait_for_event(db, execution_id, "playbook.completed")
    assert [e["step"] for e in events if e["event_type"] == "command.issued"] == ["start", "count"]
    report: dict[str, Any] = api.request("GET", f"/api/executions/{execution_id}/replay")
    assert report["log_complete"] and report["matches"], report["differences"]
