"""The claim lease: attempts, 409 for terminal/held commands, 404 for unknown ones."""

from __future__ import annotations

from typing import Any


async def _started(api: Any) -> tuple[int, dict[str, Any]]:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    return execution_id, command


async def test_claim_takes_lease_and_records_event(api: Any) -> None:
    execution_id, command = await _started(api)
    reply = await api.claim(command["event_id"], "worker-a")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["attempt"] == 1 and body["lease_seconds"] == 30.0
    assert body["command_id"] == command["command_id"] and body["execution_id"] == execution_id
    assert body["step"] == "start" and body["pool"] == "shared" and body["tool_kind"] == "python"
    assert body["catalog_path"] == "tests/linear"
    assert body["command"]["tasks"][0]["config"]["code"] == "result = {'n': 1}"

    claimed = [
        r["payload"]
        for r in await api.outbox(execution_id)
        if r["payload"].get("event_type") == "command.claimed"
    ]
    assert len(claimed) == 1
    assert claimed[0]["worker_id"] == "worker-a"
    assert claimed[0]["meta"]["attempt"] == 1

    status = (await api.client.get(f"/api/commands/{command['event_id']}")).json()
    assert status["status"] == "CLAIMED" and status["worker_id"] == "worker-a" and status["attempt"] == 1
    assert status["event_id"] == command["event_id"]


async def test_live_lease_says_retry_later_and_expired_lease_is_reclaimed(api: Any) -> None:
    _execution_id, command = await _started(api)
    assert (await api.claim(command["event_id"], "worker-a")).status_code == 200
    # not 409: a redelivery that meets a live lease must come back, or a dead holder's
    # command would be dropped for good
    held = await api.claim(command["event_id"], "worker-b")
    assert held.status_code == 429 and held.json()["error"] == "lease_held"
    assert held.json()["extra"]["worker_id"] == "worker-a"
    assert 1 <= int(held.headers["retry-after"]) <= 30
    assert (await api.claim(command["event_id"], "worker-a")).status_code == 429  # same worker too

    # the first worker died: let its lease run out
    await api.db.execute(
        "UPDATE noetl.command SET lease_expires_at = now() - interval '1 second' WHERE event_id = %s",
        (command["event_id"],),
    )
    again = await api.claim(command["event_id"], "worker-b")
    assert again.status_code == 200
    assert again.json()["attempt"] == 2
    status = (await api.client.get(f"/api/commands/{command['event_id']}")).json()
    assert status["worker_id"] == "worker-b" and status["attempt"] == 2


async def test_claim_terminal_command_is_409(api: Any) -> None:
    execution_id, command = await _started(api)
    await api.run_command(execution_id, {"n": 1})
    reply = await api.claim(command["event_id"], "worker-b")
    assert reply.status_code == 409
    assert reply.json()["extra"]["status"] == "COMPLETED"


async def test_claim_unknown_and_bad_ids(api: Any) -> None:
    unknown = await api.claim(123456789, "w")
    assert unknown.status_code == 404 and unknown.json()["error"] == "not_found"
    assert (await api.client.get("/api/commands/123456789")).status_code == 404
    assert (await api.claim("not-an-id", "w")).status_code == 400
    assert (await api.client.post("/api/commands/1/claim", json={})).status_code == 400
    assert (await api.client.post("/api/commands/1/claim", json={"worker_id": ""})).status_code == 400


async def test_concurrent_claims_have_one_winner(api: Any) -> None:
    import asyncio

    _execution_id, command = await _started(api)
    replies = await asyncio.gather(*(api.claim(command["event_id"], f"w{i}") for i in range(6)))
    assert sorted(r.status_code for r in replies) == [200] + [429] * 5


def _done(
    api: Any, execution_id: int, step: str, command_id: int, attempt: int, result: Any
) -> dict[str, Any]:
    """A worker's ``command.completed`` for a command it holds."""
    return {
        "execution_id": execution_id,
        "event_type": "command.completed",
        "step": step,
        "meta": {"command_id": command_id, "attempt": attempt},
        "context": {"result": result},
        "event_id": api.ids.next_id(),
        "worker_id": "worker-a",
    }


async def test_eager_dispatch_claims_the_next_command_in_the_terminal_transaction(api: Any) -> None:
    execution_id, command = await _started(api)
    claim = await api.claim(command["event_id"], "worker-a")
    done = _done(api, execution_id, command["step"], command["command_id"], claim.json()["attempt"], {"n": 1})
    reply = await api.post_events({"events": [done], "eager": {"worker_id": "worker-a", "pool": "shared"}})
    assert reply.status_code == 200, reply.text
    (eager,) = reply.json()["commands"]
    (next_command,) = await api.open_commands(execution_id)
    assert eager["event_id"] == next_command["event_id"] and eager["attempt"] == 1
    assert eager["step"] == next_command["step"] != command["step"]
    assert next_command["status"] == "CLAIMED"
    rows = await api.outbox(execution_id)
    claimed = [r["payload"] for r in rows if r["payload"].get("event_type") == "command.claimed"]
    assert claimed[-1]["meta"] == {
        "command_id": next_command["command_id"],
        "attempt": 1,
        "pool": "shared",
        "eager": True,
    }
    # its notification waits in the outbox for the lease's end: the publisher is not offered it
    (notice,) = [
        r for r in rows if r["subject"].startswith("noetl.commands.") and r["event_id"] == eager["command_id"]
    ]
    assert notice["payload"]["event_id"] == eager["event_id"] and notice["status"] == "PENDING"
    assert eager["command_id"] not in await _offered(api)
    # the eager worker died: once the lease has run out the notification goes out, and its
    # claim takes the command over as attempt 2
    assert (await api.claim(eager["event_id"], "worker-b")).status_code == 429
    await api.db.execute(
        "UPDATE noetl.command SET lease_expires_at = now() - interval '1 second' WHERE event_id = %s",
        (eager["event_id"],),
    )
    await api.db.execute(
        "UPDATE noetl.outbox SET available_at = now() WHERE execution_id = %s AND event_id = %s",
        (execution_id, eager["command_id"]),
    )
    assert eager["command_id"] in await _offered(api)
    again = await api.claim(eager["event_id"], "worker-b")
    assert again.status_code == 200 and again.json()["attempt"] == 2


async def _offered(api: Any) -> list[int]:
    """The outbox keys of the command notifications a publisher's claim is offered now."""
    reply = await api.client.post("/api/internal/outbox/claim", json={"limit": 1000}, headers=api.auth)
    assert reply.status_code == 200, reply.text
    return [row["event_id"] for row in reply.json()["rows"] if row["subject"].startswith("noetl.commands.")]


async def test_an_eager_command_that_finishes_leaves_no_notification_to_publish(api: Any) -> None:
    execution_id, command = await _started(api)
    claim = await api.claim(command["event_id"], "worker-a")
    done = _done(api, execution_id, command["step"], command["command_id"], claim.json()["attempt"], {"n": 1})
    reply = await api.post_events({"events": [done], "eager": {"worker_id": "worker-a", "pool": "shared"}})
    (eager,) = reply.json()["commands"]
    finished = _done(api, execution_id, eager["step"], eager["command_id"], 1, {"n": 2})

    assert (await api.post_events({"events": [finished]})).status_code == 200

    notices = [
        r["event_id"] for r in await api.outbox(execution_id) if r["subject"].startswith("noetl.commands.")
    ]
    (following,) = await api.open_commands(execution_id)  # issued by that outcome, not eagerly
    # the eager one deleted unpublished with its command's outcome; the others were due at
    # once (nobody published them in this test) and go out as written
    assert notices == [command["command_id"], following["command_id"]]
    assert await _offered(api) == [command["command_id"], following["command_id"]]


async def test_no_eager_command_for_another_pool_or_without_asking(api: Any) -> None:
    execution_id, command = await _started(api)
    claim = await api.claim(command["event_id"], "worker-a")
    meta = {"command_id": command["command_id"], "attempt": claim.json()["attempt"]}
    done = {
        "execution_id": execution_id,
        "event_type": "command.completed",
        "step": command["step"],
        "meta": meta,
        "context": {"result": {"n": 1}},
        "event_id": api.ids.next_id(),
    }
    # a worker of the shared pool asking for system commands is refused, and nothing is kept
    refused = await api.post_events({"events": [done], "eager": {"worker_id": "worker-a", "pool": "system"}})
    assert refused.status_code == 403, refused.text
    (still_running,) = await api.open_commands(execution_id)
    assert still_running["command_id"] == command["command_id"]
    reply = await api.post_events({"events": [done]})
    assert reply.status_code == 200 and "commands" not in reply.json()
    (next_command,) = await api.open_commands(execution_id)
    assert next_command["status"] == "PENDING"


FAN_OUT = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: fan_out, path: tests/fan_out}
workflow:
  - step: start
    tool: {kind: python, code: "result = 1"}
    next: {spec: {mode: inclusive}, arcs: [{step: left}, {step: middle}, {step: right}]}
  - step: left
    tool: {kind: python, code: "result = 'l'"}
  - step: middle
    tool: {kind: python, code: "result = 'm'"}
  - step: right
    tool: {kind: python, code: "result = 'r'"}
"""


async def _complete_start(api: Any, eager: dict[str, Any]) -> tuple[int, Any]:
    await api.register(FAN_OUT)
    execution_id = await api.execute("tests/fan_out")
    (command,) = await api.open_commands(execution_id)
    claim = await api.claim(command["event_id"], "worker-a")
    done = _done(api, execution_id, "start", command["command_id"], claim.json()["attempt"], 1)
    return execution_id, await api.post_events({"events": [done], "eager": eager})


async def test_eager_dispatch_hands_over_one_command_per_free_slot(api: Any) -> None:
    execution_id, reply = await _complete_start(api, {"worker_id": "worker-a", "pool": "shared", "slots": 2})
    assert reply.status_code == 200, reply.text
    handed = reply.json()["commands"]
    assert len(handed) == 2 and {c["attempt"] for c in handed} == {1}
    commands = {c["event_id"]: c for c in await api.open_commands(execution_id)}
    assert len(commands) == 3  # three branches issued, two of them claimed for the worker
    assert sorted(c["status"] for c in commands.values()) == ["CLAIMED", "CLAIMED", "PENDING"]
    assert {commands[c["event_id"]]["status"] for c in handed} == {"CLAIMED"}
    claimed = [
        r["payload"]["meta"]
        for r in await api.outbox(execution_id)
        if r["payload"].get("event_type") == "command.claimed" and r["payload"]["meta"].get("eager")
    ]
    assert sorted(m["command_id"] for m in claimed) == sorted(c["command_id"] for c in handed)
    # the third branch is for any worker: its notification's claim takes it
    (pending,) = [c for c in commands.values() if c["status"] == "PENDING"]
    assert (await api.claim(pending["event_id"], "worker-b")).status_code == 200


async def test_eager_slots_out_of_range_are_refused(api: Any) -> None:
    _execution_id, reply = await _complete_start(api, {"worker_id": "worker-a", "pool": "shared", "slots": 0})
    assert reply.status_code == 400 and "eager.slots" in reply.json()["detail"]


async def test_a_terminal_event_reusing_a_recorded_event_id_is_refused_and_changes_nothing(api: Any) -> None:
    execution_id, command = await _started(api)
    claim = await api.claim(command["event_id"], "worker-a")
    taken = (await api.outbox(execution_id))[0]["payload"]["event_id"]  # playbook.execution_requested
    done = {
        "execution_id": execution_id,
        "event_type": "command.completed",
        "step": command["step"],
        "meta": {"command_id": command["command_id"], "attempt": claim.json()["attempt"]},
        "context": {"result": {"n": 1}},
        "event_id": taken,
    }
    reply = await api.post_events({"events": [done]})
    assert reply.status_code == 409 and "already recorded" in reply.json()["detail"], reply.text
    (still_open,) = await api.open_commands(execution_id)
    assert still_open["event_id"] == command["event_id"] and still_open["status"] == "CLAIMED"


BRANCHES = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: branches, path: tests/branches}
workflow:
  - step: start
    tool: {kind: python, code: "result = 1"}
    next: {spec: {mode: inclusive}, arcs: [{step: left}, {step: right}]}
  - step: left
    tool: {kind: python, code: "result = 'l'"}
    next: {spec: {mode: exclusive}, arcs: [{step: after_left}]}
  - step: after_left
    tool: {kind: python, code: "result = 'l2'"}
  - step: right
    tool: {kind: python, code: "raise ValueError('right fails')"}
"""


async def test_no_eager_command_of_an_execution_the_same_batch_ended(api: Any) -> None:
    await api.register(BRANCHES)
    execution_id = await api.execute("tests/branches")
    await api.run_command(execution_id, 1)
    branches = {c["step"]: c for c in await api.open_commands(execution_id)}
    events = []
    for step, event_type, context in (
        ("left", "command.completed", {"result": "l"}),
        ("right", "command.failed", {"error": {"message": "right fails"}}),
    ):
        command = branches[step]
        claim = await api.claim(command["event_id"], "worker-a")
        events.append(
            {
                "execution_id": execution_id,
                "event_type": event_type,
                "step": step,
                "meta": {"command_id": command["command_id"], "attempt": claim.json()["attempt"]},
                "context": context,
                "event_id": api.ids.next_id(),
                "worker_id": "worker-a",
            }
        )
    # left issues after_left, then right fails the execution: after_left is cancelled, not handed over
    reply = await api.post_events(
        {"events": events, "eager": {"worker_id": "worker-a", "pool": "shared", "slots": 2}}
    )
    assert reply.status_code == 200, reply.text
    assert "commands" not in reply.json()
    assert (await api.client.get(f"/api/executions/{execution_id}")).json()["status"] == "FAILED"
    cur = await api.db.execute(
        "SELECT status FROM noetl.command WHERE execution_id = %s AND step = 'after_left'", (execution_id,)
    )
    assert [r[0] for r in await cur.fetchall()] == ["CANCELLED"]
