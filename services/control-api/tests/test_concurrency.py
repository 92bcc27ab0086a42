"""Parallel branches completing at the same moment: the execution lock serialises them."""

from __future__ import annotations

import asyncio
from typing import Any

FAN_OUT = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: fan, path: tests/fan}
workflow:
  - step: start
    tool: {kind: python, code: "result = 0"}
    next: {spec: {mode: inclusive}, arcs: [{step: a}, {step: b}, {step: c}]}
  - step: a
    tool: {kind: python, code: "result = 'a'"}
    next: {spec: {mode: exclusive}, arcs: [{step: join}]}
  - step: b
    tool: {kind: python, code: "result = 'b'"}
    next: {spec: {mode: exclusive}, arcs: [{step: join}]}
  - step: c
    tool: {kind: python, code: "result = 'c'"}
    next: {spec: {mode: exclusive}, arcs: [{step: join}]}
  - step: join
    tool: {kind: python, code: "result = 'joined'"}
"""


async def _complete(api: Any, execution_id: int, command: dict[str, Any], result: Any, worker: str) -> None:
    claim = await api.claim(command["event_id"], worker)
    assert claim.status_code == 200, claim.text
    meta = {"command_id": command["command_id"], "attempt": claim.json()["attempt"]}
    events = [
        {
            "execution_id": execution_id,
            "event_type": "command.started",
            "meta": meta,
            "event_id": api.ids.next_id(),
        },
        {
            "execution_id": execution_id,
            "event_type": "command.completed",
            "meta": meta,
            "event_id": api.ids.next_id(),
            "context": {"result": result, "set": {"ctx.last": result}},
        },
    ]
    reply = await api.post_events({"events": events})
    assert reply.status_code == 200, reply.text


async def test_parallel_completions_join_once(api: Any) -> None:
    await api.register(FAN_OUT)
    execution_id = await api.execute("tests/fan")
    (start,) = await api.open_commands(execution_id)
    await _complete(api, execution_id, start, 0, "w0")
    branches = await api.open_commands(execution_id)
    assert sorted(c["step"] for c in branches) == ["a", "b", "c"]

    await asyncio.gather(*(_complete(api, execution_id, c, c["step"], f"w-{c['step']}") for c in branches))
    (join,) = await api.open_commands(execution_id)
    assert join["step"] == "join"
    await _complete(api, execution_id, join, "joined", "w-join")

    body = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert body["status"] == "COMPLETED"
    assert body["results"] == {"start": 0, "a": "a", "b": "b", "c": "c", "join": "joined"}
    assert body["ctx"]["last"] == "joined"
    cur = await api.db.execute(
        "SELECT step, count(*) FROM noetl.command WHERE execution_id = %s GROUP BY step ORDER BY step",
        (execution_id,),
    )
    assert await cur.fetchall() == [("a", 1), ("b", 1), ("c", 1), ("join", 1), ("start", 1)]
