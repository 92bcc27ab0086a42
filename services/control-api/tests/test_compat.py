"""The upstream NoETL API's shapes (docs/compatibility.md), against a real Postgres: each
route lands in the same use cases as the suite's own."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from cryptography.fernet import Fernet

LINEAR = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: linear, path: tests/linear}
workflow:
  - step: start
    tool: {kind: python, code: "result = 1"}
"""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_register_base64_and_list_with_filters(api: Any) -> None:
    reply = await api.client.post(
        "/api/catalog/register", json={"content": _b64(api.linear), "resource_type": "Playbook"}
    )
    assert reply.status_code == 201, reply.text
    first = reply.json()
    assert first["path"] == "tests/linear" and first["version"] == 1 and first["status"] == "success"
    assert int(first["catalog_id"]) > 0
    # the same text, plain, keeps its version: base64 is only the envelope
    assert (await api.register())["catalog_id"] == first["catalog_id"]
    await api.register(api.linear.replace("greeting: hello", "greeting: hey"))

    listing = (await api.client.post("/api/catalog/list", json={"resource_type": "Playbook"})).json()
    assert [(e["path"], e["version"], e["kind"]) for e in listing["entries"]] == [
        ("tests/linear", 2, "Playbook"),
        ("tests/linear", 1, "Playbook"),
    ]
    assert "greeting: hey" in listing["entries"][0]["content"]
    by_path = await api.client.post("/api/catalog/list", json={"path": "tests/linear"})
    assert len(by_path.json()["entries"]) == 2
    assert (await api.client.post("/api/catalog/list", content=b"")).json()["entries"]
    for nothing in ({"resource_type": "Credential"}, {"agent_only": True}, {"capability": "x"}):
        assert (await api.client.post("/api/catalog/list", json=nothing)).json() == {"entries": []}

    by_id = await api.client.post("/api/catalog/resource", json={"catalog_id": first["catalog_id"]})
    assert by_id.status_code == 200 and by_id.json()["version"] == 1
    latest = await api.client.post(
        "/api/catalog/resource", json={"path": "tests/linear", "version": "latest"}
    )
    assert latest.json()["version"] == 2 and latest.json()["catalog_id"] != first["catalog_id"]
    missing = await api.client.post("/api/catalog/resource", json={"catalog_id": "999999"})
    assert missing.status_code == 404


async def test_register_batch_reports_each_item(api: Any) -> None:
    reply = await api.client.post(
        "/api/catalog/register/batch",
        json={"items": [{"content": _b64(api.linear)}, {"content": "workflow: [unclosed"}]},
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["registered"], body["failed"]) == (1, 1)
    assert body["results"][0]["path"] == "tests/linear" and body["results"][1]["status"] == "failed"


async def test_execute_with_workload_catalog_id_status_and_rerun(api: Any) -> None:
    registered = await api.register()
    started = await api.client.post(
        "/api/execute",
        json={"catalog_id": registered["catalog_id"], "workload": {"who": "x"}, "resource_kind": "playbook"},
    )
    assert started.status_code == 201, started.text
    execution_id = started.json()["execution_id"]
    row = await api.db.execute("SELECT payload FROM noetl.execution WHERE execution_id = %s", (execution_id,))
    assert (await row.fetchone())[0] == {"who": "x"}

    status = (await api.client.get(f"/api/executions/{execution_id}/status")).json()
    assert status["status"] == "RUNNING" and (status["completed"], status["failed"]) == (False, False)
    assert status["current_step"] == "start" and status["end_time"] is None

    await api.run_command(execution_id, {"n": 1})
    status = (await api.client.get(f"/api/executions/{execution_id}/status")).json()
    assert status["completed_steps"] == ["start"] and status["current_step"] == "second"

    rerun = await api.client.post(f"/api/executions/{execution_id}/rerun", json={"workload": {"more": 1}})
    assert rerun.status_code == 201, rerun.text
    row = await api.db.execute(
        "SELECT payload FROM noetl.execution WHERE execution_id = %s", (rerun.json()["execution_id"],)
    )
    assert (await row.fetchone())[0] == {"who": "x", "more": 1}

    refused = await api.client.post("/api/execute", json={"path": "tests/linear", "resource_kind": "agent"})
    assert refused.status_code == 400
    both = await api.client.post(
        "/api/execute", json={"path": "tests/linear", "payload": {"a": 1}, "workload": {}}
    )
    assert both.status_code == 400


async def test_cancel_reply_names_what_it_ended_and_pages(api: Any) -> None:
    await api.register()
    first = await api.execute()
    second = await api.execute()
    cancelled = await api.client.post(
        f"/api/executions/{first}/cancel", json={"cascade": False, "reason": "r"}
    )
    body = cancelled.json()
    assert body["status"] == "CANCELLED" and body["cancelled_executions"] == [str(first)]
    again = (await api.client.post(f"/api/executions/{first}/cancel")).json()
    assert again["cancelled_executions"] == [] and "already ended" in again["message"]
    status = (await api.client.get(f"/api/executions/{first}/status")).json()
    assert (status["completed"], status["failed"]) == (True, False) and status["end_time"]

    upstream = (await api.client.get("/api/executions", params={"page": 1, "page_size": 1})).json()
    assert [e["execution_id"] for e in upstream] == [str(second)]
    assert upstream[0]["catalog_id"] != "0" and upstream[0]["progress"] == 0
    page2 = (await api.client.get("/api/executions", params={"page": 2, "page_size": 1})).json()
    assert [(e["execution_id"], e["progress"]) for e in page2] == [(str(first), 100)]

    own = (await api.client.get("/api/executions", params={"limit": 1})).json()
    assert [e["execution_id"] for e in own["executions"]] == [second] and own["next_cursor"] == second
    rest = (await api.client.get("/api/executions", params={"limit": 1, "before": own["next_cursor"]})).json()
    assert [e["execution_id"] for e in rest["executions"]] == [first]
    by_offset = (await api.client.get("/api/executions", params={"offset": 1})).json()
    assert [e["execution_id"] for e in by_offset["executions"]] == [first] and by_offset[
        "next_cursor"
    ] is None
    future = (await api.client.get("/api/executions", params={"since": "2999-01-01"})).json()
    assert future["executions"] == []
    bad = await api.client.get("/api/executions", params={"until": "yesterday"})
    assert bad.status_code == 400


async def test_worker_pools(api: Any) -> None:
    registration = {"worker_id": "w-compat", "pool": "shared", "capacity": 4}
    assert (await api.client.post("/api/worker/pool/register", json=registration)).status_code == 200
    pools = (await api.client.get("/api/worker/pools")).json()
    assert pools["count"] == 1 and pools["items"][0]["name"] == "w-compat"
    assert pools["items"][0]["status"] == "ready" and pools["items"][0]["runtime"]["pool"] == "shared"
    assert (await api.client.get("/api/worker/pools", params={"status": "offline"})).json()["count"] == 0


async def test_credential_and_keychain_listings(
    database_url: str, serve_app: Any, make_settings: Any
) -> None:
    settings = make_settings(database_url, credentials_key=Fernet.generate_key().decode())
    async with serve_app(settings) as client:
        await _secrets(client)


async def _secrets(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/credentials", json={"name": "pg", "type": "postgres", "data": {"password": "p"}, "tags": ["a"]}
    )
    assert created.status_code == 201, created.text
    assert created.json()["credential_type"] == "postgres" and created.json()["type"] == "postgres"
    listing = (await client.get("/api/credentials", params={"q": "P"})).json()
    assert [c["id"] for c in listing["items"]] == ["pg"] and listing["filter"] == {"q": "P"}
    assert listing["items"] == listing["credentials"]
    assert (await client.get("/api/credentials", params={"q": "nothing"})).json()["items"] == []

    registered = (await client.post("/api/catalog/register", json={"content": _b64(LINEAR)})).json()
    for name, allowed in (("for_tests", ["tests"]), ("for_etl", ["etl"])):
        put = await client.post("/api/keychain", json={"name": name, "value": "s", "allowed_paths": allowed})
        assert put.status_code == 201, put.text
    keychain = (await client.get(f"/api/keychain/catalog/{registered['catalog_id']}")).json()
    assert keychain["count"] == 1 and keychain["entries"][0]["name"] == "for_tests"
    assert keychain["entries"][0]["value"] is None
