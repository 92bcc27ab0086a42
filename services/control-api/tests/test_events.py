"""POST /api/events: idempotency, stale attempts, lease renewal, advancing executions."""

from __future__ import annotations

from typing import Any


async def _claimed(api: Any, worker: str = "w1") -> tuple[int, dict[str, Any], dict[str, Any]]:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    claim = await api.claim(command["event_id"], worker)
    assert claim.status_code == 200
    meta = {"command_id": command["command_id"], "attempt": claim.json()["attempt"]}
    return execution_id, command, meta


def _event(
    api: Any, execution_id: int, event_type: str, meta: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "event_type": event_type,
        "event_id": api.ids.next_id(),
        "step": "start",
        "meta": meta,
        "worker_id": "w1",
        **extra,
    }


async def test_event_post_is_idempotent_by_event_id(api: Any) -> None:
    execution_id, _command, meta = await _claimed(api)
    started = _event(api, execution_id, "command.started", meta)
    first = await api.post_events(started)
    assert first.status_code == 200 and first.json() == {"accepted": 1, "duplicates": 0}
    retry = await api.post_events(started)
    assert retry.json() == {"accepted": 0, "duplicates": 1}
    batch = await api.post_events({"events": [started, _event(api, execution_id, "call.done", meta)]})
    assert batch.json() == {"accepted": 1, "duplicates": 1}
    rows = [r for r in await api.outbox(execution_id) if r["event_id"] == started["event_id"]]
    assert len(rows) == 1 and rows[0]["payload"]["catalog_path"] == "tests/linear"


async def test_ids_may_be_strings(api: Any) -> None:
    execution_id, _command, meta = await _claimed(api)
    event = _event(api, execution_id, "command.started", {k: str(v) for k, v in meta.items()})
    event["execution_id"] = str(execution_id)
    event["event_id"] = str(event["event_id"])
    reply = await api.post_events(event)
    assert reply.status_code == 200, reply.text
    assert reply.json()["accepted"] == 1


async def test_stale_attempt_is_409(api: Any) -> None:
    execution_id, command, meta = await _claimed(api)
    await api.db.execute(
        "UPDATE noetl.command SET lease_expires_at = now() - interval '1 second' WHERE command_id = %s",
        (command["command_id"],),
    )
    assert (await api.claim(command["event_id"], "w2")).json()["attempt"] == 2
    stale = await api.post_events(_event(api, execution_id, "command.completed", meta, context={"result": 1}))
    assert stale.status_code == 409 and stale.json()["error"] == "stale_attempt"
    assert stale.json()["extra"]["attempt"] == 2
    (still_open,) = await api.open_commands(execution_id)
    assert still_open["status"] == "CLAIMED"


async def test_heartbeat_and_started_renew_the_lease(api: Any) -> None:
    execution_id, command, meta = await _claimed(api)
    await api.db.execute(
        "UPDATE noetl.command SET lease_expires_at = now() + interval '1 second' WHERE command_id = %s",
        (command["command_id"],),
    )
    reply = await api.post_events(_event(api, execution_id, "command.heartbeat", meta))
    assert reply.status_code == 200
    cur = await api.db.execute(
        "SELECT lease_expires_at > now() + interval '20 seconds' FROM noetl.command WHERE command_id = %s",
        (command["command_id"],),
    )
    assert (await cur.fetchone())[0] is True
    await api.post_events(_event(api, execution_id, "command.started", meta))
    status = (await api.client.get(f"/api/commands/{command['event_id']}")).json()
    assert status["started_at"] is not None


async def test_completed_advances_and_terminal_events_are_duplicates(api: Any) -> None:
    execution_id, _command, meta = await _claimed(api)
    done = _event(api, execution_id, "command.completed", meta, context={"result": {"n": 1}})
    assert (await api.post_events(done)).json() == {"accepted": 1, "duplicates": 0}
    (next_command,) = await api.open_commands(execution_id)
    assert next_command["step"] == "second"
    # a late event for the finished command, even with a new id, is not applied again
    late = _event(api, execution_id, "command.completed", meta, context={"result": {"n": 99}})
    assert (await api.post_events(late)).json() == {"accepted": 0, "duplicates": 1}
    assert [c["step"] for c in await api.open_commands(execution_id)] == ["second"]
    state = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert state["results"] == {"start": {"n": 1}}


async def test_failed_command_fails_execution(api: Any) -> None:
    execution_id, _command, meta = await _claimed(api)
    failed = _event(api, execution_id, "command.failed", meta, context={"error": {"message": "boom"}})
    assert (await api.post_events(failed)).status_code == 200
    body = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert body["status"] == "FAILED"
    assert "boom" in body["error"]
    assert await api.open_commands(execution_id) == []


async def test_event_errors_are_client_errors(api: Any) -> None:
    execution_id, command, meta = await _claimed(api)
    unknown_execution = await api.post_events(_event(api, 999, "call.done", meta))
    assert unknown_execution.status_code == 404
    no_command = await api.post_events(_event(api, execution_id, "call.done", {}))
    assert no_command.status_code == 400 and "meta.command_id" in no_command.json()["detail"]
    unknown_command = await api.post_events(
        _event(api, execution_id, "command.started", {"command_id": 5, "attempt": 1})
    )
    assert unknown_command.status_code == 404
    no_meta = await api.post_events(_event(api, execution_id, "command.completed", {}))
    assert no_meta.status_code == 400 and no_meta.json()["error"] == "validation_error"
    bad_attempt = await api.post_events(
        _event(api, execution_id, "command.started", {**meta, "attempt": "x"})
    )
    assert bad_attempt.status_code == 400
    assert (await api.post_events({"events": []})).status_code == 400
    spoof = await api.post_events(_event(api, execution_id, "playbook.completed", {}))
    assert spoof.status_code == 400 and "server only" in spoof.json()["detail"]
    # a reused outcome is folded by replay: only a rerun from a step records one
    reused = await api.post_events(_event(api, execution_id, "step.reused", meta, context={"result": 1}))
    assert reused.status_code == 400 and "server only" in reused.json()["detail"]
    assert (await api.post_events({"execution_id": execution_id})).status_code == 400
    huge = _event(api, execution_id, "call.done", meta, context={"result": "x" * 200_000})
    too_large = await api.post_events(huge)
    assert too_large.status_code == 413 and too_large.json()["error"] == "payload_too_large"
    secret = _event(
        api, execution_id, "call.done", meta, context={"api_key": "abc", "note": "Bearer abcdefghijkl"}
    )
    assert (await api.post_events(secret)).status_code == 200
    (row,) = [r for r in await api.outbox(execution_id) if r["event_id"] == secret["event_id"]]
    assert row["payload"]["context"] == {"api_key": "[REDACTED]", "note": "[REDACTED]"}
    assert command["status"] == "PENDING"


async def test_a_nul_character_in_an_event_is_refused_before_anything_is_kept(api: Any) -> None:
    """The outbox keeps payloads as written, the event log (jsonb) cannot hold a NUL: the
    ingest refuses it with 400, and a string that only spells the escape is stored."""
    execution_id, _command, meta = await _claimed(api)
    nul = _event(api, execution_id, "call.done", meta, context={"out": "a\x00b"})
    refused = await api.post_events(nul)
    assert refused.status_code == 400 and "NUL character" in refused.json()["detail"]
    assert [r for r in await api.outbox(execution_id) if r["event_id"] == nul["event_id"]] == []
    spelled = _event(api, execution_id, "call.done", meta, context={"out": "a\\u0000b"})
    assert (await api.post_events(spelled)).status_code == 200
    (row,) = [r for r in await api.outbox(execution_id) if r["event_id"] == spelled["event_id"]]
    assert row["payload"]["context"] == {"out": "a\\u0000b"}


async def test_events_for_an_unclaimed_command_are_409(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    meta = {"command_id": command["command_id"], "attempt": 0}
    reply = await api.post_events(_event(api, execution_id, "command.completed", meta, context={"result": 1}))
    assert reply.status_code == 409 and reply.json()["error"] == "conflict"
    assert [c["status"] for c in await api.open_commands(execution_id)] == ["PENDING"]


async def test_events_after_cancel_are_duplicates(api: Any) -> None:
    execution_id, _command, meta = await _claimed(api)
    assert (await api.client.post(f"/api/executions/{execution_id}/cancel")).status_code == 200
    late = _event(api, execution_id, "command.completed", meta, context={"result": 1})
    assert (await api.post_events(late)).json() == {"accepted": 0, "duplicates": 1}
    assert (await api.client.get(f"/api/executions/{execution_id}")).json()["status"] == "CANCELLED"


async def test_a_heartbeat_of_a_cancelled_command_gets_409_so_the_worker_stops(api: Any) -> None:
    execution_id, _command, meta = await _claimed(api)
    assert (await api.client.post(f"/api/executions/{execution_id}/cancel")).status_code == 200
    beat = await api.post_events(_event(api, execution_id, "command.heartbeat", meta))
    assert beat.status_code == 409 and "cancelled" in beat.text
    late = _event(api, execution_id, "command.failed", meta, context={"error": {"message": "stopped"}})
    assert (await api.post_events(late)).status_code == 200


async def test_batch_dedupes_within_itself_and_after_a_terminal_event(api: Any) -> None:
    execution_id, _command, meta = await _claimed(api)
    call = _event(api, execution_id, "call.done", meta)
    done = _event(api, execution_id, "command.completed", meta, context={"result": {"n": 1}})
    after = _event(api, execution_id, "step.exit", meta)
    reply = await api.post_events({"events": [call, call, done, after]})
    assert reply.json() == {"accepted": 2, "duplicates": 2}
    assert [c["step"] for c in await api.open_commands(execution_id)] == ["second"]
    recorded = {r["event_id"] for r in await api.outbox(execution_id)}
    assert call["event_id"] in recorded and done["event_id"] in recorded and after["event_id"] not in recorded


async def test_batch_spans_executions_and_is_all_or_nothing(api: Any) -> None:
    execution_id, _command, meta = await _claimed(api)
    other, _other_command, other_meta = await _claimed(api)
    ok = [_event(api, execution_id, "call.done", meta), _event(api, other, "note", other_meta)]
    assert (await api.post_events({"events": ok})).json() == {"accepted": 2, "duplicates": 0}
    before = len(await api.outbox())
    stale = {**meta, "attempt": meta["attempt"] + 1}
    mixed = [_event(api, other, "note", other_meta), _event(api, execution_id, "command.started", stale)]
    assert (await api.post_events({"events": mixed})).status_code == 409
    assert len(await api.outbox()) == before
