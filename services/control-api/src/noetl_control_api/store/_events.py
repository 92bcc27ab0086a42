"""The read model ``noetl.event``: written only by the projection, read by the API."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec
from noetl_common import Event, ProjectedEvent
from psycopg import AsyncConnection

from ._db import json_param
from ._notifier import EVENT_CHANNEL, PAYLOAD_MAX_BYTES, WAKE_ALL
from ._pages import budgeted, was_cut
from ._time import iso

_ENCODER = msgspec.json.Encoder()


def _timestamp(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    # a naive timestamp is taken as UTC, the suite's only zone
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _canonical_times(events: Sequence[ProjectedEvent]) -> list[ProjectedEvent]:
    """The events with each ``created_at`` as Postgres reads it whatever Python accepted
    (ISO week dates, a naive time taken as UTC), or unset when it does not parse; a batch's
    events mostly share their times, so each distinct one is parsed once."""
    seen: dict[str, str | None] = {}
    out: list[ProjectedEvent] = []
    for event in events:
        value = event.created_at
        if value is not None:
            if value not in seen:
                parsed = _timestamp(value)
                seen[value] = parsed.isoformat() if parsed is not None else None
            event = msgspec.structs.replace(event, created_at=seen[value])
        out.append(event)
    return out


async def project_events(conn: AsyncConnection[Any], events: Sequence[ProjectedEvent]) -> int:
    """Insert events in one set-based statement; returns how many were new.

    Every event must carry an event_id (the caller checks). An unparseable ``created_at``
    falls back to the projection time rather than losing the event. New rows notify
    :data:`EVENT_CHANNEL` (at the caller's commit) for ``GET /api/executions/{id}/stream``,
    naming their executions so only those streams wake; a batch whose execution ids would
    not fit a NOTIFY payload sends :data:`WAKE_ALL` instead.

    The batch goes as one JSON document that Postgres unpacks (``json_to_recordset``): the
    events were checked by the decoder, their ``context`` and ``meta`` are still the text
    they came as, and eleven arrays of a thousand elements each cost the control-api more
    to dump than the whole document costs Postgres to parse. A JSON null is SQL NULL.
    """
    if not events:
        return 0
    # one statement: the CTE notifies once, delivered at the caller's commit when the rows
    # become visible to the streams, and only when a row was actually inserted
    cur = await conn.execute(
        "WITH ins AS (INSERT INTO noetl.event (event_id, execution_id, event_type, step, status, created_at,"
        " context, meta, worker_id, parent_execution_id, catalog_path)"
        " SELECT e.event_id, e.execution_id, e.event_type, e.step, e.status, coalesce(e.created_at, now()),"
        " e.context, e.meta, e.worker_id, e.parent_execution_id, e.catalog_path"
        " FROM json_to_recordset(%b) AS e(event_id bigint, execution_id bigint, event_type text, step text,"
        " status text, created_at timestamptz, context jsonb, meta jsonb, worker_id text,"
        " parent_execution_id bigint, catalog_path text)"
        " ON CONFLICT (execution_id, event_id) DO NOTHING RETURNING execution_id),"
        " new AS (SELECT count(*) AS n, string_agg(DISTINCT execution_id::text, ',') AS ids FROM ins),"
        " woke AS (SELECT pg_notify(%b, CASE WHEN octet_length(ids) <= %b THEN ids ELSE %b END)"
        " FROM new WHERE n > 0)"
        " SELECT n, (SELECT count(*) FROM woke) FROM new",
        (
            json_param(_ENCODER.encode(_canonical_times(events))),
            EVENT_CHANNEL,
            PAYLOAD_MAX_BYTES,
            WAKE_ALL,
        ),
    )
    row = await cur.fetchone()
    return int(row[0]) if row is not None else 0


#: What an event row weighs in a reply: its free-form JSON, the rest is small and bounded.
_EVENT_SIZE = (
    "octet_length(coalesce(context::text, '')) + octet_length(coalesce(meta::text, '')) AS page_size"
)


async def list_events(
    conn: AsyncConnection[Any],
    execution_id: int,
    after: int,
    limit: int,
    max_bytes: int,
    types: Sequence[str] | None = None,
    *,
    event_type: str | None = None,
    step: str | None = None,
) -> list[Event]:
    """Projected events of one execution with ``event_id > after``, in id order: at most
    ``limit``, and no more once their JSON reaches ``max_bytes`` (at least one); with ``types``
    only events of those types, with ``event_type`` (a type, or a prefix ending in ``.``:
    ``command.``) and ``step`` only those."""
    cur = await conn.execute(
        budgeted(
            "SELECT event_id, execution_id, event_type, step, status, created_at, context, meta, worker_id,"
            f" parent_execution_id, catalog_path, {_EVENT_SIZE} FROM noetl.event"
            " WHERE execution_id = %s AND event_id > %s"
            " AND (%s::text[] IS NULL OR event_type = ANY(%s::text[]))"
            " AND (%s::text IS NULL OR event_type = %s OR (right(%s, 1) = '.' AND starts_with(event_type, %s)))"
            " AND (%s::text IS NULL OR step = %s) ORDER BY event_id LIMIT %s",
            "event_id",
        ),
        (
            execution_id,
            after,
            None if types is None else list(types),
            None if types is None else list(types),
            event_type,
            event_type,
            event_type,
            event_type,
            step,
            step,
            limit,
            max_bytes,
        ),
    )
    return [
        Event(
            event_id=r[0],
            execution_id=r[1],
            event_type=r[2],
            step=r[3],
            status=r[4],
            created_at=iso(r[5]),
            context=r[6],
            meta=r[7],
            worker_id=r[8],
            parent_execution_id=r[9],
            catalog_path=r[10],
        )
        for r in await cur.fetchall()
    ]


async def projected_since(
    conn: AsyncConnection[Any],
    execution_id: int,
    since: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
    max_bytes: int | None = None,
) -> tuple[list[tuple[datetime, Event]], bool]:
    """Projected events in projection order (``projected_at``, then ``event_id``), with their
    ``projected_at``: those projected at or after ``since``, after the keyset ``after``; at
    most ``limit``, and with ``max_bytes`` no more once their JSON reaches it (at least one).
    The flag says whether the page was cut short (more follow at once)."""
    size = _EVENT_SIZE if max_bytes is not None else "0 AS page_size"
    query = (
        "SELECT projected_at, event_id, execution_id, event_type, step, status, created_at, context, meta,"
        f" worker_id, parent_execution_id, catalog_path, {size} FROM noetl.event"
        " WHERE execution_id = %s AND (%s::timestamptz IS NULL OR projected_at >= %s)"
        " AND (%s::timestamptz IS NULL OR (projected_at, event_id) > (%s, %s))"
        " ORDER BY projected_at, event_id LIMIT %s"
    )
    budget: tuple[int, ...] = ()
    if max_bytes is not None:
        query, budget = budgeted(query, "projected_at, event_id"), (max_bytes,)
    cur = await conn.execute(
        query,
        (
            execution_id,
            since,
            since,
            after[0] if after else None,
            after[0] if after else None,
            after[1] if after else 0,
            limit,
            *budget,
        ),
    )
    rows = await cur.fetchall()
    page = [
        (
            r[0],
            Event(
                event_id=r[1],
                execution_id=r[2],
                event_type=r[3],
                step=r[4],
                status=r[5],
                created_at=iso(r[6]),
                context=r[7],
                meta=r[8],
                worker_id=r[9],
                parent_execution_id=r[10],
                catalog_path=r[11],
            ),
        )
        for r in rows
    ]
    return page, max_bytes is not None and was_cut(rows)


async def projected_at(conn: AsyncConnection[Any], execution_id: int, event_id: int) -> datetime | None:
    """When ``event_id`` of the execution was projected; None when it is not (yet)."""
    cur = await conn.execute(
        "SELECT projected_at FROM noetl.event WHERE execution_id = %s AND event_id = %s",
        (execution_id, event_id),
    )
    row = await cur.fetchone()
    return None if row is None else row[0]


async def has_terminal_event(conn: AsyncConnection[Any], execution_id: int, projected_by: datetime) -> bool:
    """True when the execution's ``playbook.completed|failed|cancelled`` was projected at or
    before ``projected_by``."""
    cur = await conn.execute(
        "SELECT 1 FROM noetl.event WHERE execution_id = %s AND projected_at <= %s"
        " AND event_type IN ('playbook.completed', 'playbook.failed', 'playbook.cancelled') LIMIT 1",
        (execution_id, projected_by),
    )
    return await cur.fetchone() is not None
