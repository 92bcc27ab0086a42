"""Tools through the real stack: a credential-authenticated postgres step writes rows and a big
result reaches the next steps through the result store."""

from __future__ import annotations

import json
from typing import Any

import httpx
import psycopg
from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev.testing import wait_for_event

Conn = psycopg.Connection[dict[str, Any]]
def _password(stack: Stack) -> str:
    assert stack.database_url is not None
    return str(psycopg.conninfo.conninfo_to_dict(stack.database_url)["password"])


def _pg_local(stack: Stack) -> dict[str, Any]:
    """The stack's own database as a credential: its password must never leak anywhere."""
    assert stack.database_url is not None
    info = psycopg.conninfo.conninfo_to_dict(stack.database_url)
    return {
        "name": "pg_local",
        "credential_type": "postgres",
        "data": {
            "db_host": info.get("host", "127.0.0.1"),
            "db_port": str(info.get("port", "5432")),
            "db_user": info.get("user", "postgres"),
            "db_password": _password(stack),
            "db_name": info["dbname"],
        },
    }


def test_postgres_with_auth_writes_rows_and_a_big_result_flows_on(stack: Stack, api: Api, db: Conn) -> None:
    password = _password(stack)
    with httpx.Client(base_url=stack.api_url, timeout=30, headers=stack.auth()) as http:
        created = http.post("/api/credentials", json=_pg_local(stack))
        assert created.status_code in (200, 201), created.text
        assert password not in created.text

        started = api.execute("e2e/pg_big_result")
        final = api.wait(started["execution_id"], timeout=120)

        assert final["status"] == "COMPLETED", final
        assert final["results"]["check"] == {
            "row_count": 2000,
            "rows": 2000,
            "last": "row-2000",
            "id_sum": 2000 * 2001 // 2,
        }
        execution_id = int(started["execution_id"])
        events = wait_for_event(db, execution_id, "playbook.completed")
        completed = {e["step"]: e for e in events if e["event_type"] == "command.completed"}
        read_ref = completed["read"]["context"]["result"]["$ref"]
        rows_ref = completed["rows"]["context"]["result"]["$ref"]
        assert read_ref["media_type"] == "application/json" and read_ref["size"] > 100 * 1024
        assert rows_ref["media_type"] == "application/vnd.apache.arrow.stream"
        assert completed["start"]["context"]["result"]["row_count"] == 2000  # small: inline
        resolved = http.get("/api/result/resolve", params={"key": rows_ref["key"]}).json()
        assert len(resolved) == 2000 and resolved[0] == {"id": 1, "name": "row-1", "pad": "x" * 100}

        # the credential's secret is in no event, no outbox row, no reply
        assert password not in json.dumps(events)
        outbox = db.execute(
            "SELECT count(*) AS n FROM noetl.outbox WHERE execution_id = %s AND payload::text LIKE %s",
            (execution_id, f"%{password}%"),
        ).fetchone()
        assert outbox is not None and outbox["n"] == 0
        assert password not in http.get("/api/credentials/pg_local").text
        assert password not in http.get(f"/api/executions/{execution_id}").text

    count = db.execute("SELECT count(*) AS n FROM public.e2e_big_rows").fetchone()
    assert count is not None and count["n"] == 2000


def test_credentials_through_the_cli_never_print_the_secret(cli: Any, tmp_path: Any) -> None:
    data = tmp_path / "cred.json"
    data.write_text(json.dumps({"token": "cli-secret-token-9931", "header": "x-api-key"}))

    added = cli("credential", "add", "e2e_cli_api", "--type", "header", "--data", f"@{data}")
    listed = cli("credential", "list")
    shown = cli("credential", "show", "e2e_cli_api")
    deleted = cli("credential", "delete", "e2e_cli_api")
    gone = cli("credential", "show", "e2e_cli_api")

    for done in (added, listed, shown, deleted):
        assert done.code == 0, done.stderr
        assert "cli-secret-token-9931" not in done.stdout + done.stderr
    assert json.loads(shown.stdout)["data"] == {"token": "[REDACTED]", "header": "[REDACTED]"}
    assert "e2e_cli_api" in listed.stdout and "header" in listed.stdout
    assert gone.code == 1 and "not found" in gone.stderr


METADATA = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_egress_metadata, path: e2e/egress_metadata}
workflow:
  - step: start
    tool: {kind: http, url: "http://169.254.169.254/latest/meta-data/", timeout: 5}
"""


def test_an_http_step_cannot_reach_the_metadata_service(api: Api) -> None:
    """The stack allows loopback to the workers (its own services, the tests' servers), not link-local."""
    api.register(METADATA)

    final = api.wait(api.execute("e2e/egress_metadata")["execution_id"], timeout=60)

    assert final["status"] == "FAILED", final
    error = json.dumps(final["error"])
    assert "EgressRefused" in error and "169.254.169.254" in error and "WORKER_HTTP_ALLOW_CIDRS" in error
