"""Command rows and the claim lease (architecture.md §5)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import msgspec
from psycopg import AsyncConnection, AsyncCursor
from psycopg.types.json import Jsonb

from ._time import iso

TERMINAL = frozenset({"COMPLETED", "FAILED", "CANCELLED"})
_COLUMNS = (
    "command_id, event_id, execution_id, step, pool, tool_kind, spec, meta, status, attempt, worker_id,"
    " lease_expires_at, started_at, claimed_by"
)


#: what the ingest's lock reads: every column but ``spec`` (None), which the ingest never
#: needs and which carries the step's rendered context, the largest value of the row
_LOCKED_COLUMNS = _COLUMNS.replace(" spec,", " NULL,")


class CommandRow(msgspec.Struct, kw_only=True):
    """One ``noetl.command`` row."""

    command_id: int
    event_id: int
    execution_id: int
    step: str
    pool: str
    tool_kind: str
    spec: Any
    meta: Any
    status: str
    attempt: int
    worker_id: str | None
    lease_expires_at: str | None
    started_at: str | None
    #: the principal (token name) holding the lease; events for the command come from it only
    claimed_by: str | None = None


class NewCommand(msgspec.Struct, kw_only=True):
    """A command to insert: PENDING at attempt 0, or, with ``worker_id`` (eager dispatch),
    CLAIMED by that worker at attempt 1 with a lease, as :func:`claim` would leave it."""

    command_id: int
    event_id: int
    execution_id: int
    step: str
    pool: str
    tool_kind: str
    spec: Any
    meta: Any
    worker_id: str | None = None
    claimed_by: str | None = None


def _row(r: Any) -> CommandRow:
    return CommandRow(
        command_id=r[0],
        event_id=r[1],
        execution_id=r[2],
        step=r[3],
        pool=r[4],
        tool_kind=r[5],
        spec=r[6],
        meta=r[7],
        status=r[8],
        attempt=r[9],
        worker_id=r[10],
        lease_expires_at=iso(r[11]),
        started_at=iso(r[12]),
        claimed_by=r[13],
    )


async def insert_many(
    conn: AsyncConnection[Any], commands: Sequence[NewCommand], lease_seconds: float = 0.0
) -> None:
    """Insert commands; those with a ``worker_id`` start CLAIMED with a ``lease_seconds`` lease."""
    if not commands:
        return
    await conn.execute(
        "INSERT INTO noetl.command (command_id, event_id, execution_id, step, pool, tool_kind, spec, meta,"
        " status, attempt, worker_id, lease_expires_at, claimed_by)"
        " SELECT c, e, x, s, p, k, sp, m, CASE WHEN w IS NULL THEN 'PENDING' ELSE 'CLAIMED' END,"
        " CASE WHEN w IS NULL THEN 0 ELSE 1 END, w, CASE WHEN w IS NULL THEN NULL ELSE now() + %b END, b"
        " FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::text[], %b::text[], %b::text[],"
        " %b::jsonb[], %b::jsonb[], %b::text[], %b::text[]) AS u(c, e, x, s, p, k, sp, m, w, b)",
        (
            timedelta(seconds=lease_seconds),
            [c.command_id for c in commands],
            [c.event_id for c in commands],
            [c.execution_id for c in commands],
            [c.step for c in commands],
            [c.pool for c in commands],
            [c.tool_kind for c in commands],
            [Jsonb(c.spec) for c in commands],
            [Jsonb(c.meta) for c in commands],
            [c.worker_id for c in commands],
            [c.claimed_by for c in commands],
        ),
    )


async def get_by_event(conn: AsyncConnection[Any], event_id: int) -> CommandRow | None:
    cur = await conn.execute(f"SELECT {_COLUMNS} FROM noetl.command WHERE event_id = %s", (event_id,))
    row = await cur.fetchone()
    return None if row is None else _row(row)


async def lock_many(conn: AsyncConnection[Any], command_ids: Sequence[int]) -> dict[int, CommandRow]:
    """Lock command rows in id order; returns those found, without their ``spec`` (None)."""
    return await read_locked(await send_lock_many(conn, command_ids))


async def send_lock_many(conn: AsyncConnection[Any], command_ids: Sequence[int]) -> AsyncCursor[Any] | None:
    """The query of :func:`lock_many`, sent and not read (pipeline mode: it rides with the
    statement read next); None when there is nothing to lock. The rows come without their
    ``spec`` (None)."""
    if not command_ids:
        return None
    return await conn.execute(
        f"SELECT {_LOCKED_COLUMNS} FROM noetl.command WHERE command_id = ANY(%s) ORDER BY command_id FOR UPDATE",
        (sorted(set(command_ids)),),
    )


async def read_locked(cur: AsyncCursor[Any] | None) -> dict[int, CommandRow]:
    """The rows :func:`send_lock_many` locked."""
    return {} if cur is None else {r[0]: _row(r) for r in await cur.fetchall()}


async def claim(
    conn: AsyncConnection[Any],
    event_id: int,
    worker_id: str,
    lease_seconds: float,
    *,
    claimed_by: str,
    pool: str | None,
) -> tuple[CommandRow, str, int | None] | None:
    """Take the lease when the command is PENDING or its lease expired (and is of ``pool``,
    unless None); None otherwise.

    Returns the command with its execution's catalog path and parent (one round trip).
    """
    columns = ", ".join(f"c.{name.strip()}" for name in _COLUMNS.split(","))
    cur = await conn.execute(
        "UPDATE noetl.command c SET status = 'CLAIMED', attempt = c.attempt + 1, worker_id = %s,"
        " claimed_by = %s, lease_expires_at = now() + %s, started_at = NULL, updated_at = now()"
        " FROM noetl.execution e WHERE c.event_id = %s AND e.execution_id = c.execution_id"
        " AND (%s::text IS NULL OR c.pool = %s)"
        " AND (c.status = 'PENDING' OR (c.status = 'CLAIMED' AND c.lease_expires_at < now()))"
        f" RETURNING {columns}, e.path, e.parent_execution_id",
        (worker_id, claimed_by, timedelta(seconds=lease_seconds), event_id, pool, pool),
    )
    row = await cur.fetchone()
    return None if row is None else (_row(row), row[14], row[15])


async def held_in(
    conn: AsyncConnection[Any], execution_id: int, claimed_by: str, command_event_id: int | None = None
) -> CommandRow | None:
    """A command of the execution (the one with ``command_event_id`` when given) whose live
    lease ``claimed_by`` holds; None when it holds none."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM noetl.command WHERE execution_id = %s AND claimed_by = %s"
        " AND status = 'CLAIMED' AND lease_expires_at > now() AND (%s::bigint IS NULL OR event_id = %s) LIMIT 1",
        (execution_id, claimed_by, command_event_id, command_event_id),
    )
    row = await cur.fetchone()
    return None if row is None else _row(row)


async def mark_started(conn: AsyncConnection[Any], command_ids: Sequence[int], lease_seconds: float) -> None:
    """``command.started``: record the start (first one wins) and renew the lease."""
    if command_ids:
        await conn.execute(
            "UPDATE noetl.command SET started_at = coalesce(started_at, now()), lease_expires_at = now() + %s,"
            " updated_at = now() WHERE command_id = ANY(%s)",
            (timedelta(seconds=lease_seconds), list(command_ids)),
        )


async def renew_lease(conn: AsyncConnection[Any], command_ids: Sequence[int], lease_seconds: float) -> None:
    if command_ids:
        await conn.execute(
            "UPDATE noetl.command SET lease_expires_at = now() + %s, updated_at = now()"
            " WHERE command_id = ANY(%s)",
            (timedelta(seconds=lease_seconds), list(command_ids)),
        )


async def finish(conn: AsyncConnection[Any], finished: Mapping[int, str]) -> None:
    """Give commands their final status (command_id → status); a command that never reported
    ``command.started`` on its own gets its start time here. A notification of theirs not yet
    due (an eager command's, deferred to its lease's end) is deleted: no worker needs it; one
    already due goes out as written."""
    if finished:
        await conn.execute(
            "WITH done AS (UPDATE noetl.command c SET status = u.status, started_at = coalesce(c.started_at, now()),"
            " lease_expires_at = NULL, updated_at = now()"
            " FROM unnest(%b::bigint[], %b::text[]) AS u(command_id, status) WHERE c.command_id = u.command_id"
            # the ids again as an index condition: a join with unnest alone is planned as a
            # scan of the whole table while it is small, a cost that grows with it
            " AND c.command_id = ANY(%b::bigint[])"
            " RETURNING c.execution_id, coalesce(c.notice_id, c.command_id) AS notice_id)"
            # each notification looked up by its key, never a join over every pending row,
            # whatever the planner thinks of the outbox's size (LIMIT keeps the subquery
            # from being flattened into one), then deleted by its id
            " DELETE FROM noetl.outbox WHERE outbox_id = ANY(ARRAY("
            "   SELECT n.outbox_id FROM done, LATERAL (SELECT o.outbox_id FROM noetl.outbox o"
            "     WHERE o.execution_id = done.execution_id AND o.event_id = done.notice_id"
            "       AND o.status = 'PENDING' AND o.available_at > now() LIMIT 1) AS n))",
            (list(finished), list(finished.values()), list(finished)),
        )


async def cancel_open(conn: AsyncConnection[Any], execution_id: int) -> int:
    """Cancel every PENDING or CLAIMED command of an execution that reached a final status."""
    cur = await conn.execute(
        "UPDATE noetl.command SET status = 'CANCELLED', lease_expires_at = NULL, updated_at = now()"
        " WHERE execution_id = %s AND status IN ('PENDING', 'CLAIMED')",
        (execution_id,),
    )
    return cur.rowcount
