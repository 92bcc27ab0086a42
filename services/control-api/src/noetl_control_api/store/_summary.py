"""Narrow reads for an execution's summary (the run inspector): the fields of its events that
say what ran when, never the results they carry, so a 1,000-item loop costs a few thousand
small rows instead of every result twice."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection


class StepEvent(msgspec.Struct, kw_only=True, frozen=True):
    """What the summary needs of one event (``fired``/``count``/``error``/``args`` only for
    the event types that carry them)."""

    event_id: int
    event_type: str
    step: str | None
    status: str | None
    at: datetime
    command_id: int | None
    attempt: int | None
    iteration: int | None
    worker_id: str | None
    fired: list[str] | None
    count: int | None
    error: Any
    args: Any


class Child(msgspec.Struct, kw_only=True, frozen=True):
    execution_id: int
    path: str
    status: str
    created_at: datetime
    updated_at: datetime


async def step_events(conn: AsyncConnection[Any], execution_id: int, limit: int) -> list[StepEvent]:
    """At most ``limit`` events of the execution, in id order, each cut to what a summary reads."""
    cur = await conn.execute(
        "SELECT event_id, event_type, step, status, created_at,"
        " (meta->>'command_id')::bigint, (meta->>'attempt')::int,"
        " (meta->'command_meta'->>'iteration')::int, worker_id,"
        " CASE WHEN event_type = 'next.evaluated' THEN context->'fired' END,"
        " CASE WHEN event_type = 'loop.started' THEN (context->>'count')::int END,"
        " CASE WHEN event_type IN ('command.failed', 'playbook.failed', 'playbook.cancelled')"
        "  THEN coalesce(context->'error', context->'reason') END,"
        " CASE WHEN event_type = 'step.enter' THEN context->'args' END"
        " FROM noetl.event WHERE execution_id = %s ORDER BY event_id LIMIT %s",
        (execution_id, limit),
    )
    return [
        StepEvent(
            event_id=r[0],
            event_type=r[1],
            step=r[2],
            status=r[3],
            at=r[4],
            command_id=r[5],
            attempt=r[6],
            iteration=r[7],
            worker_id=r[8],
            fired=[str(s) for s in r[9]] if isinstance(r[9], list) else None,
            count=r[10],
            error=r[11],
            args=r[12],
        )
        for r in await cur.fetchall()
    ]


async def result_previews(
    conn: AsyncConnection[Any], execution_id: int, whole_max_chars: int, head_items: int
) -> dict[str, tuple[Any, int]]:
    """step → (its stored result, or when that is over ``whole_max_chars`` of JSON its first
    ``head_items`` items or keys; the whole result's length in JSON characters)."""
    cur = await conn.execute(
        "SELECT r.key, length(r.value::text),"
        " CASE WHEN length(r.value::text) <= %s THEN r.value"
        "  WHEN json_typeof(r.value->'results') = 'array' THEN json_build_object('results', (SELECT"
        "   json_agg(a.value) FROM (SELECT value FROM json_array_elements(r.value->'results') LIMIT %s) a))"
        "  WHEN json_typeof(r.value) = 'array' THEN (SELECT json_agg(a.value)"
        "   FROM (SELECT value FROM json_array_elements(r.value) LIMIT %s) a)"
        "  WHEN json_typeof(r.value) = 'object' THEN (SELECT json_object_agg(o.key, o.value)"
        "   FROM (SELECT key, value FROM json_each(r.value) LIMIT %s) o)"
        "  ELSE to_json(left(r.value::text, %s)) END"
        " FROM noetl.execution e, json_each(CASE WHEN json_typeof(e.state->'results') = 'object'"
        "  THEN e.state->'results' ELSE '{}'::json END) r"
        " WHERE e.execution_id = %s",
        (whole_max_chars, head_items, head_items, head_items, whole_max_chars, execution_id),
    )
    return {r[0]: (r[2], r[1]) for r in await cur.fetchall()}


async def command_tasks(conn: AsyncConnection[Any], command_ids: Sequence[int]) -> dict[int, Any]:
    """command id → the tasks of its spec (the step's tool configuration as issued)."""
    if not command_ids:
        return {}
    cur = await conn.execute(
        "SELECT command_id, spec->'tasks' FROM noetl.command WHERE command_id = ANY(%s)", (list(command_ids),)
    )
    return {r[0]: r[1] for r in await cur.fetchall()}


async def children(conn: AsyncConnection[Any], execution_id: int, limit: int) -> list[Child]:
    """The execution's child executions, oldest first, at most ``limit``."""
    return await _linked(conn, "parent_execution_id", execution_id, limit)


async def reruns(conn: AsyncConnection[Any], execution_id: int, limit: int) -> list[Child]:
    """The executions that restart this one from a step (``rerun_of``), oldest first."""
    return await _linked(conn, "rerun_of", execution_id, limit)


async def _linked(
    conn: AsyncConnection[Any],
    column: Literal["parent_execution_id", "rerun_of"],
    execution_id: int,
    limit: int,
) -> list[Child]:
    """Executions whose ``column`` names ``execution_id``, oldest first, at most ``limit``."""
    cur = await conn.execute(
        "SELECT execution_id, path, status, created_at, updated_at FROM noetl.execution"
        f" WHERE {column} = %s ORDER BY execution_id LIMIT %s",
        (execution_id, limit),
    )
    return [
        Child(execution_id=r[0], path=r[1], status=r[2], created_at=r[3], updated_at=r[4])
        for r in await cur.fetchall()
    ]
