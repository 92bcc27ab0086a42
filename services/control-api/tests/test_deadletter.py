"""``POST /api/internal/commands/{event_id}/fail``: a dead-lettered command fails its step."""

from __future__ import annotations

from typing import Any


async def _fail(api: Any, event_id: int, reason: str = "past max_deliver (10)") -> Any:
    return await api.client.post(
        f"/api/internal/commands/{event_id}/fail",
        json={"reason": reason, "worker_id": "w-dlq"},
        headers=api.auth,
    )


async def _execution(api: Any, execution_id: int) -> dict[str, Any]:
    reply = await api.client.get(f"/api/executions/{execution_id}")
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


async def test_a_pending_command_is_failed_and_the_execution_fails(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    reply = await _fail(api, command["event_id"])
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["failed"] is True and body["status"] == "FAILED"
    assert body["command_id"] == command["command_id"]
    assert (await _execution(api, execution_id))["status"] == "FAILED"
    cur = await api.db.execute(
        "SELECT payload FROM noetl.outbox WHERE execution_id = %s AND payload->>'event_type' = 'command.failed'",
        (execution_id,),
    )
    (payload,) = [r[0] for r in await cur.fetchall()]
    assert payload["context"]["error"] == {"message": "past max_deliver (10)", "type": "DeadLettered"}
    # idempotent: a second call changes nothing and says so
    again = await _fail(api, command["event_id"])
    assert again.status_code == 200
    assert again.json()["failed"] is False and again.json()["status"] == "FAILED"


async def test_a_command_held_by_a_dead_worker_is_failed_and_its_late_events_are_refused(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    claim = await api.claim(command["event_id"], "w-dead")
    assert claim.status_code == 200
    reply = await _fail(api, command["event_id"])
    assert reply.status_code == 200 and reply.json()["failed"] is True
    # the holder comes back and reports completion: the command is finished, nothing changes
    late = await api.post_events(
        {
            "execution_id": execution_id,
            "event_type": "command.completed",
            "step": command["step"],
            "meta": {"command_id": command["command_id"], "attempt": claim.json()["attempt"]},
            "context": {"result": {"n": 1}},
            "event_id": api.ids.next_id(),
            "worker_id": "w-dead",
        }
    )
    assert late.status_code == 200 and late.json()["accepted"] == 0
    assert (await _execution(api, execution_id))["status"] == "FAILED"


async def test_a_completed_command_is_left_alone(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    command = await api.run_command(execution_id, {"n": 1})
    reply = await _fail(api, command["event_id"])
    assert reply.status_code == 200
    assert reply.json() == {
        "event_id": command["event_id"],
        "command_id": command["command_id"],
        "execution_id": execution_id,
        "failed": False,
        "status": "COMPLETED",
    }
    assert (await _execution(api, execution_id))["status"] == "RUNNING"


async def test_unknown_command_bad_id_and_empty_reason(api: Any) -> None:
    assert (await _fail(api, 123456789)).status_code == 404
    bad = await api.client.post(
        "/api/internal/commands/not-an-id/fail", json={"reason": "x"}, headers=api.auth
    )
    assert bad.status_code == 400 and bad.json()["error"] == "validation_error"
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    empty = await _fail(api, command["event_id"], reason="  ")
    assert empty.status_code == 400
