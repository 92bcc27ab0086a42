"""POST /api/execute and the execution read routes."""

from __future__ import annotations

from typing import Any


async def test_execute_writes_state_command_and_outbox_in_one_transaction(api: Any) -> None:
    await api.register()
    execution_id = await api.execute(payload={"greeting": "hi", "password": "hunter2"})

    (command,) = await api.open_commands(execution_id)
    assert command["step"] == "start" and command["status"] == "PENDING" and command["attempt"] == 0

    rows = await api.outbox(execution_id)
    events = [r for r in rows if r["subject"] == f"noetl.events.default.default.{execution_id}.0"]
    commands = [r for r in rows if r["subject"].startswith("noetl.commands.")]
    assert len(events) + len(commands) == len(rows)
    types = [r["payload"]["event_type"] for r in events]
    assert types == ["playbook.execution_requested", "playbook.started", "step.enter", "command.issued"]
    assert all(r["event_id"] == r["payload"]["event_id"] for r in events)
    assert [e["event_id"] for e in events] == sorted(e["event_id"] for e in events)
    assert events[0]["payload"]["context"]["payload"]["password"] == "[REDACTED]"
    issued = events[-1]["payload"]
    assert issued["meta"] == {
        "command_id": command["command_id"],
        "pool": "shared",
        "tool_kind": "python",
        "command_meta": {"run": 1, "seq": 1, "step": "start"},  # what a replay feeds back
    }

    (notification,) = commands
    assert notification["subject"] == f"noetl.commands.shared.{execution_id}"
    assert notification["payload"] == {
        "execution_id": execution_id,
        "event_id": command["event_id"],
        "command_id": command["command_id"],
        "step": "start",
        "server_url": api.server_url,
        "execution_pool": "shared",
    }
    assert issued["event_id"] == command["event_id"]

    # every row written by the execute call carries the same creating transaction id
    cur = await api.db.execute(
        "SELECT xmin::text FROM noetl.execution WHERE execution_id = %(e)s"
        " UNION SELECT xmin::text FROM noetl.command WHERE execution_id = %(e)s"
        " UNION SELECT xmin::text FROM noetl.outbox WHERE execution_id = %(e)s",
        {"e": execution_id},
    )
    assert len(await cur.fetchall()) == 1


async def test_execution_views(api: Any) -> None:
    await api.register()
    first = await api.execute()
    second = await api.execute()
    reply = await api.client.get(f"/api/executions/{first}")
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "RUNNING" and body["path"] == "tests/linear" and body["version"] == 1
    assert body["ctx"] == {} and body["results"] == {} and body["parent_execution_id"] is None
    assert (await api.client.get(f"/api/executions/{first}", params={})).json() == body

    listing = (await api.client.get("/api/executions")).json()["executions"]
    assert [e["execution_id"] for e in listing] == [second, first]
    limited = (await api.client.get("/api/executions", params={"limit": 1, "status": "running"})).json()
    assert [e["execution_id"] for e in limited["executions"]] == [second]
    none = (await api.client.get("/api/executions", params={"status": "COMPLETED"})).json()
    assert none["executions"] == []
    by_path = (await api.client.get("/api/executions", params={"path": "other"})).json()
    assert by_path["executions"] == []


async def test_execute_errors(api: Any) -> None:
    missing = await api.client.post("/api/execute", json={"path": "nope"})
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"
    await api.register()
    wrong_version = await api.client.post("/api/execute", json={"path": "tests/linear", "version": 7})
    assert wrong_version.status_code == 404
    huge_version = await api.client.post("/api/execute", json={"path": "tests/linear", "version": 2**40})
    assert huge_version.status_code == 400
    bad_parent = await api.client.post(
        "/api/execute", json={"path": "tests/linear", "parent_execution_id": "x"}
    )
    assert bad_parent.status_code == 400 and bad_parent.json()["error"] == "validation_error"
    bad_payload = await api.client.post("/api/execute", json={"path": "tests/linear", "payload": [1]})
    assert bad_payload.status_code == 400
    assert (await api.client.get("/api/executions/123")).status_code == 404
    assert (await api.client.get("/api/executions/abc")).status_code == 400
    assert (await api.client.get(f"/api/executions/{2**64}")).status_code == 400
    assert (await api.client.get("/api/executions", params={"status": "bogus"})).status_code == 400
    assert (await api.client.get("/api/executions", params={"limit": 0})).status_code == 400


async def test_child_execution_records_parent(api: Any) -> None:
    await api.register()
    parent = await api.execute()
    reply = await api.client.post(
        "/api/execute", json={"path": "tests/linear", "parent_execution_id": str(parent)}
    )
    assert reply.status_code == 201
    child = reply.json()["execution_id"]
    assert (await api.client.get(f"/api/executions/{child}")).json()["parent_execution_id"] == parent
    rows = await api.outbox(child)
    assert all(
        r["payload"].get("parent_execution_id") == parent for r in rows if "event_type" in r["payload"]
    )


async def test_cancel_stops_execution_and_its_commands(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    reply = await api.client.post(f"/api/executions/{execution_id}/cancel", json={"reason": "operator"})
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == "CANCELLED"
    assert await api.open_commands(execution_id) == []
    claim = await api.claim(command["event_id"])
    assert claim.status_code == 409 and claim.json()["error"] == "conflict"
    types = [r["payload"].get("event_type") for r in await api.outbox(execution_id)]
    assert types[-1] == "playbook.cancelled"
    again = await api.client.post(f"/api/executions/{execution_id}/cancel")
    assert again.status_code == 200 and again.json()["status"] == "CANCELLED"
    assert [r["payload"].get("event_type") for r in await api.outbox(execution_id)] == types
    assert (await api.client.post("/api/executions/42/cancel")).status_code == 404


async def test_cancel_cascades_to_running_descendants(api: Any) -> None:
    await api.register()

    async def start(parent: int | None) -> int:
        body: dict[str, Any] = {"path": "tests/linear", "parent_execution_id": parent}
        reply = await api.client.post("/api/execute", json=body)
        assert reply.status_code == 201
        return int(reply.json()["execution_id"])

    root = await start(None)
    child = await start(root)
    grandchild = await start(child)
    finished = await start(root)
    for n in (1, 2, 3):
        await api.run_command(finished, {"n": n})
    other = await start(None)

    assert (
        await api.client.post(f"/api/executions/{root}/cancel", json={"reason": "stop"})
    ).status_code == 200

    async def status(execution_id: int) -> str:
        return str((await api.client.get(f"/api/executions/{execution_id}")).json()["status"])

    assert [await status(e) for e in (root, child, grandchild, finished, other)] == [
        "CANCELLED", "CANCELLED", "CANCELLED", "COMPLETED", "RUNNING",
    ]  # fmt: skip
    assert await api.open_commands(grandchild) == []
    cancelled = [
        r["payload"]
        for r in await api.outbox(grandchild)
        if r["payload"].get("event_type") == "playbook.cancelled"
    ]
    assert len(cancelled) == 1
