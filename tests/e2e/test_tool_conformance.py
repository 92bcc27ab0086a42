"""Public NoETL playbooks that use the http and postgres tools, run unchanged through the stack.

The playbooks are the shared conformance set (verbatim upstream files); the local HTTP
server is the set's own ``support/echo_server.py``, served in-process on a free port.
"""

from __future__ import annotations

import importlib.util
import threading
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest
from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev.testing import conformance_dir, wait_for_event

CONFORMANCE = conformance_dir()
Conn = psycopg.Connection[dict[str, Any]]


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[str, Any]]:
    """``echo_server.py`` in a thread: (base URL, its request counter)."""
    spec = importlib.util.spec_from_file_location("echo_server", CONFORMANCE / "support" / "echo_server.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    server = ThreadingHTTPServer(("127.0.0.1", 0), module.Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", module.CALLS
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def registered(api: Api) -> Api:
    for name in (
        "upstream/v10_http_test.yaml",
        "upstream/c2_http_retry_with_stop.yaml",
        "e2e-fixtures/iterator_save_test.yaml",
        "e2e-fixtures/postgres_jsonb_test.yaml",
    ):
        api.register_file(CONFORMANCE / name)
    return api


@pytest.fixture(scope="module")
def pg_local(stack: Stack) -> None:
    assert stack.database_url is not None
    info = psycopg.conninfo.conninfo_to_dict(stack.database_url)
    data = {
        "db_host": info.get("host", "127.0.0.1"),
        "db_port": str(info.get("port", "5432")),
        "db_user": info.get("user", "postgres"),
        "db_password": info.get("password") or "",
        "db_name": info["dbname"],
    }
    body = {"name": "pg_local", "credential_type": "postgres", "data": data}
    reply = httpx.post(f"{stack.api_url}/api/credentials", json=body, headers=stack.auth(), timeout=30)
    assert reply.status_code in (200, 201), reply.text


def test_v10_http_test(registered: Api, echo: tuple[str, Any]) -> None:
    url, _ = echo
    started = registered.execute("test/http", payload={"api_url": url})
    final = registered.wait(started["execution_id"], timeout=60)

    assert final["status"] == "COMPLETED", final.get("error")
    start = final["results"]["start"]
    assert set(start) == {"status_code", "headers", "body"} and start["status_code"] == 200
    body: dict[str, Any] = {"path": "/health", "method": "GET", "args": {}, "body": None}
    assert start["body"] == body
    assert final["results"]["process"] == {"status": "ok", "status_code": 200, "body": body}
    assert final["results"]["verify"] == {"verified": True, "status_code": 200, "status": "passed"}
    assert final["results"]["end"] == {"status": "completed", "test_passed": True}


@pytest.mark.parametrize(
    ("path", "status", "requests"),
    [("/get", "COMPLETED", 1), ("/fail-then-ok/2/{key}", "COMPLETED", 3), ("/status/503", "FAILED", 3)],
)
def test_c2_http_retry_with_stop(
    registered: Api, echo: tuple[str, Any], db: Conn, path: str, status: str, requests: int
) -> None:
    url, calls = echo
    target = path.format(key=uuid.uuid4().hex)
    before = calls[target.split("?")[0]]
    started = registered.execute("tests/retry/http_stop_condition", payload={"test_url": url + target})
    final = registered.wait(started["execution_id"], timeout=60)

    assert final["status"] == status, final
    assert calls[target] - before == requests
    if status == "COMPLETED":
        assert final["results"]["start"]["status_code"] == 200
        assert final["results"]["end"] == {"status": "complete"}
    else:
        events = wait_for_event(db, int(started["execution_id"]), "playbook.failed")
        assert [e["step"] for e in events if e["event_type"] == "command.failed"] == ["start"]
        assert "end" not in final["results"]


def test_iterator_save_test_writes_one_row_per_item(registered: Api, pg_local: None, db: Conn) -> None:
    started = registered.execute("fixtures/playbooks/iterator_save_test/iterator_save_test")
    final = registered.wait(started["execution_id"], timeout=90)

    assert final["status"] == "COMPLETED", final.get("error")
    rows = db.execute(
        "SELECT id, item_name, item_value FROM public.iterator_save_test WHERE execution_id = %s ORDER BY id",
        (str(started["execution_id"]),),
    ).fetchall()
    eid = started["execution_id"]
    assert rows == [
        {"id": f"{eid}:item1", "item_name": "item1", "item_value": 100},
        {"id": f"{eid}:item2", "item_name": "item2", "item_value": 200},
        {"id": f"{eid}:item3", "item_name": "item3", "item_value": 300},
    ]


def test_postgres_jsonb_test(registered: Api, pg_local: None) -> None:
    started = registered.execute("fixtures/playbooks/data_transfer/postgres_jsonb_test")
    final = registered.wait(started["execution_id"], timeout=90)

    assert final["status"] == "COMPLETED", final.get("error")
    query = final["results"]["query_jsonb_data"]
    assert [r["user_id"] for r in query["rows"]] == [1, 3]  # the last query: notifications true
    assert [s["row_count"] for s in query["statements"]] == [3, 3, 2, 2]
    assert query["statements"][0]["rows"][0]["email"] == "alice@example.com"
    updated = final["results"]["update_jsonb_data"]["rows"]
    assert updated[0]["profile"]["preferences"]["theme"] == "auto"
    assert updated[1]["profile"]["verified"] is True
    assert final["results"]["validate_and_cleanup"]["status"] == "completed"
