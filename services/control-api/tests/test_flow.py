"""A whole linear execution through the HTTP API: execute, claim, events, completion."""

from __future__ import annotations

from typing import Any


async def test_linear_execution_runs_to_completion(api: Any) -> None:
    await api.register()
    execution_id = await api.execute(payload={"greeting": "hi"})

    for n in (1, 2, 3):
        await api.run_command(execution_id, {"n": n})

    reply = await api.client.get(f"/api/executions/{execution_id}")
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "COMPLETED"
    assert body["results"] == {"start": {"n": 1}, "second": {"n": 2}, "end": {"n": 3}}
    assert body["ctx"] == {"total": 2}
    assert body["result"] == {"n": 3}
    assert await api.open_commands(execution_id) == []

    rows = await api.outbox(execution_id)
    types = [r["payload"].get("event_type") for r in rows if r["subject"].startswith("noetl.events.")]
    assert types[0] == "playbook.execution_requested"
    assert types[-1] == "playbook.completed"
    assert types.count("command.issued") == 3
    assert types.count("command.claimed") == 3
    assert types.count("command.completed") == 3
    notifications = [r for r in rows if r["subject"].startswith("noetl.commands.")]
    assert [n["subject"] for n in notifications] == [f"noetl.commands.shared.{execution_id}"] * 3
    assert all(n["payload"]["server_url"] == api.server_url for n in notifications)
