"""Every size is bounded at the door: each limit refused with its status, nothing else disturbed."""

from __future__ import annotations

from typing import Any

import msgspec
import pyarrow as pa
from noetl_common.results import ARROW_MEDIA_TYPE
from noetl_control_api import Settings

MiB = 1024 * 1024
PAYLOAD_LIMIT = "NOETL_EXECUTE_PAYLOAD_MAX_BYTES=262144"

HUGE_PATCH = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: huge_patch, path: tests/huge_patch}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'n': 1}"}
    # each value is within the template budget (1 MiB); together they are over the largest event
    next:
      spec: {mode: exclusive}
      arcs:
        - step: second
          set: {ctx.a: "{{ 'x' * 700000 }}", ctx.b: "{{ 'y' * 700000 }}"}
  - step: second
    tool: {kind: python, code: "result = {'n': 2}"}
"""


def playbook(steps: int = 1, arcs: int = 0, name: str = "start", pad: int = 0) -> str:
    lines = [
        "apiVersion: noetl.io/v2",
        "kind: Playbook",
        "metadata: {name: sized, path: tests/sized}",
        f"workload: {{pad: '{'p' * pad}'}}",
        "workflow:",
        f"  - step: {name}",
        "    tool: {kind: noop}",
    ]
    if arcs:
        lines.append("    next: {spec: {mode: inclusive}, arcs: [" + ", ".join(["{step: end}"] * arcs) + "]}")
    lines += [f"  - step: s{i}" for i in range(steps - 1)]
    return "\n".join(lines) + "\n"


async def pending(api: Any) -> int:
    reply = await api.client.get("/api/internal/outbox/pending-count", headers=api.auth)
    assert reply.status_code == 200, reply.text
    return int(reply.json()["pending"])


async def rows(api: Any, table: str = "noetl.outbox") -> int:
    cur = await api.db.execute(f"SELECT count(*) FROM {table}")
    row = await cur.fetchone()
    return int(row[0])


def refused(reply: Any, status: int, *needles: str) -> None:
    assert reply.status_code == status, reply.text
    body = reply.json()
    for needle in needles:
        assert needle in body["detail"], body


async def test_an_execute_payload_over_the_limit_is_413_and_records_nothing(api: Any) -> None:
    await api.register()
    before = await pending(api)

    reply = await api.client.post(
        "/api/execute", json={"path": "tests/linear", "payload": {"blob": "x" * (2 * MiB)}}
    )

    refused(reply, 413, PAYLOAD_LIMIT)
    assert reply.json()["error"] == "payload_too_large"
    assert await pending(api) == before == 0
    assert await rows(api, "noetl.execution") == 0
    assert await api.execute(payload={"blob": "x" * 200_000}) > 0  # under the limit: accepted


async def test_a_playbook_over_the_size_limit_is_413_and_over_the_shape_limits_422(api: Any) -> None:
    too_big = await api.client.post("/api/catalog/register", json={"content": playbook(pad=600 * 1024)})
    too_many_steps = await api.client.post("/api/catalog/register", json={"content": playbook(steps=1001)})
    too_many_arcs = await api.client.post("/api/catalog/register", json={"content": playbook(arcs=101)})
    long_name = await api.client.post(
        "/api/catalog/register",
        json={"content": playbook(name="s" * 201).replace("- step: s0", "- step: start")},
    )

    refused(too_big, 413, "NOETL_PLAYBOOK_MAX_BYTES=524288")
    refused(too_many_steps, 422, "more than 1000")
    refused(too_many_arcs, 422, "more than 100")
    refused(long_name, 422, "more than 200")
    assert await rows(api, "noetl.catalog") == 0
    assert (
        await api.client.post("/api/catalog/register", json={"content": playbook(steps=50)})
    ).status_code == 201


async def test_worker_event_fields_and_batches_are_bounded(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    (command,) = await api.open_commands(execution_id)
    claim = await api.claim(command["event_id"])
    meta = {"command_id": command["command_id"], "attempt": claim.json()["attempt"]}
    before = await rows(api)

    def event(**fields: Any) -> dict[str, Any]:
        return {"execution_id": execution_id, "event_type": "call.progress", "meta": meta, **fields}

    long_type = await api.post_events(event(event_type="e" * 201))
    long_step = await api.post_events(event(step="s" * 201))
    long_worker = await api.post_events(event(worker_id="w" * 201))
    many_keys = await api.post_events(event(meta={**meta, **{f"k{i}": i for i in range(70)}}))
    fat_meta = await api.post_events(event(meta={**meta, "blob": "m" * 20_000}))
    big_batch = await api.post_events({"events": [event() for _ in range(1001)]})

    for reply in (long_type, long_step, long_worker, many_keys, big_batch):
        assert reply.status_code == 400, reply.text
    refused(fat_meta, 413, "meta")
    assert await rows(api) == before
    assert (await api.post_events({"events": [event() for _ in range(1000)]})).status_code == 200


async def test_pages_are_bounded_by_rows_and_by_bytes(
    serve_app: Any, settings: Settings, database_url: str
) -> None:
    import psycopg

    budget = 64 * 1024
    async with serve_app(msgspec.structs.replace(settings, page_max_bytes=budget)) as client:
        auth: dict[str, str] = {}  # each route's owner's token, sent by the test client
        assert (await client.post("/api/catalog/register", json={"content": playbook()})).status_code == 201
        execution_id = (await client.post("/api/execute", json={"path": "tests/sized"})).json()[
            "execution_id"
        ]
        events = [
            {
                "execution_id": execution_id,
                "event_id": 10_000 + i,
                "event_type": "call.progress",
                "context": {"chunk": str(i) * 20_000},
            }
            for i in range(6)
        ]
        project = await client.post("/api/internal/events/project", json={"events": events}, headers=auth)
        assert project.status_code == 200, project.text

        too_many_events = await client.get(f"/api/executions/{execution_id}/events", params={"limit": 1001})
        too_many_executions = await client.get("/api/executions", params={"limit": 1001})
        seen: list[int] = []
        pages = 0
        after = 0
        while True:
            page = (
                await client.get(
                    f"/api/executions/{execution_id}/events", params={"after": after, "limit": 1000}
                )
            ).json()["events"]
            if not page:
                break
            pages += 1
            assert sum(len(msgspec.json.encode(e["context"])) for e in page[:-1]) < budget
            seen += [e["event_id"] for e in page]
            after = page[-1]["event_id"]
        listed = await client.get("/api/executions", params={"limit": 1000})

    refused(too_many_events, 400, "1..1000")
    refused(too_many_executions, 400, "1..1000")
    assert seen == [e["event_id"] for e in events] and pages >= 2  # cut by bytes, nothing lost
    assert [e["execution_id"] for e in listed.json()["executions"]] == [execution_id]
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT count(*) FROM noetl.event")
        assert (await cur.fetchone()) == (6,)


async def test_a_decision_too_large_to_record_fails_the_execution_naming_step_and_size(api: Any) -> None:
    await api.register(HUGE_PATCH)
    execution_id = await api.execute("tests/huge_patch")

    await api.run_command(execution_id, {"n": 1})

    view = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert view["status"] == "FAILED"
    assert "step 'start'" in view["error"] and "ctx.patched event is" in view["error"]
    assert "over the largest event of 1040384 bytes" in view["error"]
    assert await api.open_commands(execution_id) == []  # second was never issued
    outbox = await api.outbox(execution_id)
    assert max(len(msgspec.json.encode(r["payload"])) for r in outbox) < 1040384
    failed = [r["payload"] for r in outbox if r["payload"].get("event_type") == "playbook.failed"]
    assert [f["context"]["cause"] for f in failed] == ["event_too_large"]
    replayed = await api.replay(execution_id)
    assert replayed["matches"], replayed["differences"]


async def test_mark_dead_fails_the_row_for_good_and_its_running_execution(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    started = next(
        r for r in await api.outbox(execution_id) if r["payload"].get("event_type") == "playbook.started"
    )
    body = {"outbox_id": started["outbox_id"], "error": "MaxPayloadError: too large for NATS"}

    first = await api.client.post("/api/internal/outbox/mark-dead", json=body, headers=api.auth)
    again = await api.client.post("/api/internal/outbox/mark-dead", json=body, headers=api.auth)
    unguarded = await api.client.post("/api/internal/outbox/mark-dead", json=body, headers={"authorization": ""})

    assert first.json() == {"marked": 1, "execution_failed": True}
    assert again.json() == {"marked": 0, "execution_failed": False}
    assert unguarded.status_code == 401
    view = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert view["status"] == "FAILED"
    assert "playbook.started" in view["error"] and "MaxPayloadError: too large for NATS" in view["error"]
    assert await api.open_commands(execution_id) == []  # its open command was cancelled with it
    statuses = {r["outbox_id"]: r["status"] for r in await api.outbox(execution_id)}
    assert statuses[started["outbox_id"]] == "FAILED"
    cur = await api.db.execute("SELECT count(*) FROM noetl.outbox WHERE status IN ('PENDING', 'IN_FLIGHT')")
    assert (await cur.fetchone())[0] == await pending(api) == len(statuses) - 1
    claimed = await api.client.post(
        "/api/internal/outbox/claim", json={"limit": 1000, "wait_ms": 0}, headers=api.auth
    )
    assert started["outbox_id"] not in {r["outbox_id"] for r in claimed.json()["rows"]}
    replayed = await api.replay(execution_id)
    assert replayed["matches"], replayed["differences"]


async def test_mark_dead_leaves_an_execution_that_has_ended_alone(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    for n in (1, 2, 3):
        await api.run_command(execution_id, {"n": n})
    row = next(r for r in await api.outbox(execution_id) if r["status"] == "PENDING")

    reply = await api.client.post(
        "/api/internal/outbox/mark-dead",
        json={"outbox_id": row["outbox_id"], "error": "out of attempts"},
        headers=api.auth,
    )

    assert reply.json() == {"marked": 1, "execution_failed": False}
    view = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert view["status"] == "COMPLETED" and view["error"] is None


async def test_the_declared_limits_are_served_to_the_publisher_and_the_projector(api: Any, auth: Any) -> None:
    reply = await api.client.get("/api/internal/limits", headers=api.auth)
    projector = await api.client.get("/api/internal/limits", headers=auth.PROJECTOR)
    unguarded = await api.client.get("/api/internal/limits", headers={"authorization": ""})

    declared = {"nats_max_payload": 1048576, "max_event_bytes": 1048576 - 8192, "event_shard_count": 1}
    assert reply.json() == declared and projector.json() == declared
    assert unguarded.status_code == 401


def arrow(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


async def test_arrow_results_over_the_limits_are_413_at_put_and_422_at_resolve(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await api.hold(execution_id)  # a worker stores results where it holds a lease
    bomb = arrow(
        pa.table(
            {"d": pa.DictionaryArray.from_arrays(pa.array([0] * 300_000, pa.int32()), pa.array(["v" * 1024]))}
        )
    )
    rows_over = arrow(pa.table({"a": pa.array(range(1_000_001), pa.int32())}))

    put_bomb = await api.client.put(
        f"/api/result/{execution_id}", content=bomb, headers={"content-type": ARROW_MEDIA_TYPE}
    )
    put_rows = await api.client.put(
        f"/api/result/{execution_id}", content=rows_over, headers={"content-type": ARROW_MEDIA_TYPE}
    )
    # stored before the limits were lowered: kept, but not turned into rows
    await api.db.execute(
        "INSERT INTO noetl.result_store (key, execution_id, media_type, size, data) VALUES (%s, %s, %s, %s, %s)",
        (f"{execution_id}/old", execution_id, ARROW_MEDIA_TYPE, len(bomb), bomb),
    )
    resolved = await api.client.get("/api/result/resolve", params={"key": f"{execution_id}/old"})
    raw = await api.client.get("/api/result/resolve", params={"key": f"{execution_id}/old", "format": "raw"})

    refused(put_bomb, 413, "NOETL_ARROW_MAX_DECODED_BYTES=268435456")
    refused(put_rows, 413, "NOETL_ARROW_MAX_ROWS=1000000")
    refused(resolved, 422, "NOETL_ARROW_MAX_DECODED_BYTES")
    assert raw.status_code == 200 and raw.content == bomb
    cur = await api.db.execute("SELECT count(*) FROM noetl.result_store")
    assert (await cur.fetchone())[0] == 1


async def test_credential_and_keychain_values_are_bounded(serve_app: Any, settings: Settings) -> None:
    from cryptography.fernet import Fernet

    keyed = msgspec.structs.replace(settings, credentials_key=Fernet.generate_key().decode())
    async with serve_app(keyed) as client:
        credential = await client.post(
            "/api/credentials", json={"name": "big", "data": {"blob": "c" * 300_000}}
        )
        entry = await client.post("/api/keychain", json={"name": "big", "value": "k" * 300_000})
        fine = await client.post("/api/credentials", json={"name": "fine", "data": {"blob": "c" * 1000}})

    refused(credential, 413, "262144")
    refused(entry, 413, "262144")
    assert fine.status_code == 201
