"""The result store: PUT → reference, resolve (JSON and Arrow), and references resolved for templates."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from noetl_common.results import ARROW_MEDIA_TYPE, decode_result, encode_result

ROWS = [{"id": i, "name": f"user-{i}", "score": i / 4, "active": i % 2 == 0} for i in range(500)]


async def test_json_round_trip(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await api.hold(execution_id)  # a worker stores results only where it holds a lease
    value = {"nested": {"list": [1, 2, 3]}, "text": "x" * 1000}

    stored = await api.client.put(f"/api/result/{execution_id}", json=value)
    ref = stored.json()["$ref"]
    resolved = await api.client.get("/api/result/resolve", params={"key": ref["key"]})

    assert stored.status_code == 201, stored.text
    assert ref["store"] == "noetl.result" and ref["media_type"] == "application/json"
    assert ref["key"].startswith(f"{execution_id}/") and ref["size"] > 1000
    assert resolved.json() == value


async def test_tabular_json_is_stored_as_arrow_and_decodes_to_rows(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await api.hold(execution_id)

    stored = await api.client.put(f"/api/result/{execution_id}", json=ROWS)
    ref = stored.json()["$ref"]
    raw = await api.client.get("/api/result/resolve", params={"key": ref["key"], "format": "raw"})
    rows = await api.client.get("/api/result/resolve", params={"key": ref["key"]})

    assert ref["media_type"] == ARROW_MEDIA_TYPE
    assert raw.headers["content-type"].startswith(ARROW_MEDIA_TYPE)
    with pa.ipc.open_stream(raw.content) as reader:
        table = reader.read_all()
    assert table.num_rows == 500 and table.column_names == ["id", "name", "score", "active"]
    assert rows.json() == ROWS


async def test_an_arrow_body_is_stored_as_sent(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await api.hold(execution_id)
    body, media = encode_result(pa.Table.from_pylist(ROWS[:3]))

    stored = await api.client.put(
        f"/api/result/{execution_id}", content=body, headers={"content-type": media}
    )
    again = await api.client.put(f"/api/result/{execution_id}", content=body, headers={"content-type": media})
    bad = await api.client.put(
        f"/api/result/{execution_id}", content=b"not arrow", headers={"content-type": media}
    )

    assert stored.json() == again.json()  # content-addressed: a retried PUT is idempotent
    assert decode_result(body, media) == ROWS[:3]
    resolved = await api.client.get("/api/result/resolve", params={"key": stored.json()["$ref"]["key"]})
    assert resolved.json() == ROWS[:3]
    assert bad.status_code == 400


async def test_unknown_execution_is_403_and_unknown_key_404(api: Any) -> None:
    # a worker stores results only in an execution where it holds a lease: none in an unknown one
    assert (await api.client.put("/api/result/123456789", json={"a": 1})).status_code == 403
    assert (await api.client.get("/api/result/resolve", params={"key": "1/none"})).status_code == 404


async def test_a_reference_in_command_completed_is_resolved_before_templates_read_it(api: Any) -> None:
    """``second``'s arc sets ``ctx.total`` from ``{{ second.n }}``: it must see the stored data."""
    await api.register()
    execution_id = await api.execute()
    await api.run_command(execution_id, {"n": 1})
    await api.hold(execution_id)
    stored = await api.client.put(f"/api/result/{execution_id}", json={"n": 42, "pad": "p" * 200_000})
    reference = stored.json()

    await api.run_command(execution_id, reference)

    view = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert view["ctx"]["total"] == 42
    assert view["results"]["second"]["n"] == 42
    cur = await api.db.execute(
        "SELECT payload FROM noetl.outbox WHERE execution_id = %s AND payload->>'event_type' = 'command.completed'",
        (execution_id,),
    )
    events = [row[0] for row in await cur.fetchall()]
    assert any(e["context"]["result"] == reference for e in events)  # the event keeps the small reference


async def test_a_referenced_last_result_stays_a_reference_in_playbook_completed(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await api.run_command(execution_id, {"n": 1})
    await api.run_command(execution_id, {"n": 2})
    await api.hold(execution_id)
    stored = await api.client.put(f"/api/result/{execution_id}", json={"n": 3, "pad": "p" * 200_000})

    await api.run_command(execution_id, stored.json())

    view = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert view["status"] == "COMPLETED" and view["result"]["n"] == 3
    cur = await api.db.execute(
        "SELECT payload FROM noetl.outbox WHERE execution_id = %s AND payload->>'event_type' = 'playbook.completed'",
        (execution_id,),
    )
    (completed,) = [row[0] for row in await cur.fetchall()]
    assert completed["context"]["result"] == stored.json()


async def test_resolve_refs_keeps_the_object_without_references(api: Any) -> None:
    from noetl_control_api.application import ResultService

    plain = {"a": [1, {"b": 2}], "c": "d"}
    assert await ResultService.resolve_refs(api.db, plain) is plain


async def test_a_dangling_reference_is_refused(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    claim = await api.claim(command["event_id"])
    meta = {"command_id": command["command_id"], "attempt": claim.json()["attempt"]}
    ref: dict[str, Any] = {"$ref": {"store": "noetl.result", "key": f"{execution_id}/missing", "size": 1}}

    reply = await api.post_events(
        {
            "execution_id": execution_id,
            "event_type": "command.completed",
            "step": "start",
            "meta": meta,
            "context": {"result": ref},
            "event_id": api.ids.next_id(),
        }
    )

    assert reply.status_code == 404
    assert "missing" in reply.json()["detail"]


async def test_a_referenced_set_value_is_resolved_into_ctx_and_the_event_keeps_the_reference(
    api: Any,
) -> None:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    claim = await api.claim(command["event_id"])
    meta = {"command_id": command["command_id"], "attempt": claim.json()["attempt"]}
    stored = await api.client.put(f"/api/result/{execution_id}", json={"rows": ["r" * 100] * 2000})
    reference = stored.json()
    events = [
        {
            "execution_id": execution_id,
            "event_type": "command.started",
            "step": "start",
            "meta": meta,
            "event_id": api.ids.next_id(),
        },
        {
            "execution_id": execution_id,
            "event_type": "command.completed",
            "step": "start",
            "meta": meta,
            "context": {"result": {"n": 1}, "set": {"ctx.big": reference, "ctx.small": 7}},
            "event_id": api.ids.next_id(),
        },
    ]

    reply = await api.post_events({"events": events})

    assert reply.status_code == 200, reply.text
    view = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert len(view["ctx"]["big"]["rows"]) == 2000 and view["ctx"]["small"] == 7
    cur = await api.db.execute(
        "SELECT payload FROM noetl.outbox WHERE execution_id = %s AND payload->>'event_type' = 'ctx.patched'",
        (execution_id,),
    )
    (patched,) = [row[0] for row in await cur.fetchall()]
    assert patched["context"]["set"] == {"ctx.big": reference, "ctx.small": 7}
