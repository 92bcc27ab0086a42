"""Every event the control-api recorded reaches ``noetl.event`` exactly once via NATS and the projector."""

from __future__ import annotations

from typing import Any

import psycopg
from noetl_cli import Api
from noetl_dev.testing import wait_until

Conn = psycopg.Connection[dict[str, Any]]


def _outbox_events(db: Conn, ids: list[int]) -> list[dict[str, Any]]:
    return db.execute(
        "select event_id, status, payload->>'event_type' as event_type from noetl.outbox"
        " where execution_id = any(%s) and subject like 'noetl.events.%%'",
        (ids,),
    ).fetchall()


def _projected(db: Conn, ids: list[int]) -> list[dict[str, Any]]:
    return db.execute(
        "select event_id, execution_id, event_type from noetl.event where execution_id = any(%s)", (ids,)
    ).fetchall()


def test_every_outbox_event_is_projected_exactly_once(api: Api, db: Conn) -> None:
    started = [api.execute("examples/hello", payload={"name": f"n{i}"}) for i in range(3)]
    started.append(api.execute("e2e/fail"))
    started.append(api.execute("examples/branch"))
    ids = [int(s["execution_id"]) for s in started]
    finals = [api.wait(i, timeout=90) for i in ids]
    assert [f["status"] for f in finals] == ["COMPLETED"] * 3 + ["FAILED", "COMPLETED"]

    def caught_up() -> tuple[list[dict[str, Any]], list[dict[str, Any]]] | None:
        outbox = _outbox_events(db, ids)
        projected = _projected(db, ids)
        published = bool(outbox) and all(r["status"] == "PUBLISHED" for r in outbox)
        same = {r["event_id"] for r in outbox} == {r["event_id"] for r in projected}
        return (outbox, projected) if published and same else None

    outbox, projected = wait_until(caught_up, timeout=60, message="the publisher and projector to catch up")

    outbox_ids = [r["event_id"] for r in outbox]
    assert len(outbox_ids) == len(set(outbox_ids)), "an event was written to the outbox twice"
    assert len(projected) == len(outbox)  # with the id sets equal: each event exactly once
    by_id = {r["event_id"]: r["event_type"] for r in outbox}
    assert all(by_id[r["event_id"]] == r["event_type"] for r in projected)
    terminal = {"COMPLETED": "playbook.completed", "FAILED": "playbook.failed"}
    for execution_id, final in zip(ids, finals, strict=True):
        types = [r["event_type"] for r in projected if r["execution_id"] == execution_id]
        assert types.count(terminal[final["status"]]) == 1, (execution_id, types)


def test_each_command_notification_has_its_command_issued_event(api: Api, db: Conn) -> None:
    started = api.execute("examples/hello")
    execution_id = int(started["execution_id"])
    assert api.wait(execution_id, timeout=60)["status"] == "COMPLETED"

    def issued_projected() -> list[dict[str, Any]] | None:
        # The notification's event_id is the claim key: the id of its command.issued event.
        rows = db.execute(
            "select o.subject, o.payload, e.event_type, e.step, e.meta from noetl.outbox o"
            " left join noetl.event e on e.event_id = (o.payload->>'event_id')::bigint"
            " where o.execution_id = %s and o.subject like 'noetl.commands.%%' order by o.outbox_id",
            (execution_id,),
        ).fetchall()
        return rows if rows and all(r["event_type"] is not None for r in rows) else None

    rows = wait_until(issued_projected, timeout=60, message="command.issued events in noetl.event")
    # greet and end were claimed eagerly by the worker that finished the step before: their
    # notifications waited for the lease and were deleted unpublished when they finished
    assert [r["step"] for r in rows] == ["start"]
    eager = db.execute(
        "select payload->>'step' as step from noetl.outbox where execution_id = %s"
        " and payload->>'event_type' = 'command.claimed' and (payload->'meta'->>'eager')::boolean"
        " order by outbox_id",
        (execution_id,),
    ).fetchall()
    assert [r["step"] for r in eager] == ["greet", "end"]
    assert {r["event_type"] for r in rows} == {"command.issued"}
    assert all(r["subject"] == f"noetl.commands.shared.{execution_id}" for r in rows)
    assert all(r["payload"]["step"] == r["step"] for r in rows)
    assert all(r["payload"]["command_id"] == r["meta"]["command_id"] for r in rows)
