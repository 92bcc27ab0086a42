"""Retention of finished executions: their rows in every table, and old read-model events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from psycopg import AsyncConnection

TERMINAL_EXECUTION = ("COMPLETED", "FAILED", "CANCELLED")


@dataclass(frozen=True)
class Purged:
    """Rows deleted by one retention pass."""

    executions: int = 0
    events: int = 0
    commands: int = 0
    outbox: int = 0
    results: int = 0
    keychain: int = 0
    objects: int = 0
    step_logs: int = 0


async def purge_executions(conn: AsyncConnection[Any], older_than_seconds: float, limit: int) -> Purged:
    """Delete up to ``limit`` terminal executions last updated before the age, with all their rows:
    events, outbox rows, commands, stored results, step logs, keychain entries scoped to them
    and the objects their plug-ins wrote (keys ``executions/<execution_id>/...``).

    An execution is kept while any of its outbox rows is unpublished (its events must still
    reach the stream) or while it has a child execution that is still running.
    """
    cur = await conn.execute(
        "SELECT x.execution_id FROM noetl.execution x"
        " WHERE x.status = ANY(%s) AND x.updated_at < now() - %s"
        "   AND NOT EXISTS (SELECT 1 FROM noetl.outbox o WHERE o.execution_id = x.execution_id"
        "                   AND o.status <> 'PUBLISHED')"
        "   AND NOT EXISTS (SELECT 1 FROM noetl.execution c WHERE c.parent_execution_id = x.execution_id"
        "                   AND c.status <> ALL(%s))"
        " ORDER BY x.execution_id LIMIT %s FOR UPDATE SKIP LOCKED",
        (list(TERMINAL_EXECUTION), timedelta(seconds=older_than_seconds), list(TERMINAL_EXECUTION), limit),
    )
    ids = [row[0] for row in await cur.fetchall()]
    if not ids:
        return Purged()
    counts = {}
    for table in ("event", "outbox", "command", "result_store", "step_log"):
        cur = await conn.execute(f"DELETE FROM noetl.{table} WHERE execution_id = ANY(%b::bigint[])", (ids,))
        counts[table] = cur.rowcount
    cur = await conn.execute("DELETE FROM noetl.keychain WHERE scope_id = ANY(%b::bigint[])", (ids,))
    keychain = cur.rowcount
    # a range in byte order per execution: 'executions/12/' <= key < 'executions/120' ('0' follows '/')
    cur = await conn.execute(
        "DELETE FROM noetl.object o USING unnest(%b::bigint[]) AS u(id)"
        " WHERE o.key COLLATE \"C\" >= ('executions/' || u.id || '/')"
        " AND o.key COLLATE \"C\" < ('executions/' || u.id || '0')",
        (ids,),
    )
    objects = cur.rowcount
    cur = await conn.execute("DELETE FROM noetl.execution WHERE execution_id = ANY(%b::bigint[])", (ids,))
    return Purged(
        executions=cur.rowcount,
        events=counts["event"],
        commands=counts["command"],
        outbox=counts["outbox"],
        results=counts["result_store"],
        keychain=keychain,
        objects=objects,
        step_logs=counts["step_log"],
    )


async def purge_events(conn: AsyncConnection[Any], older_than_seconds: float, limit: int) -> int:
    """Delete up to ``limit`` read-model events older than the age of terminal executions."""
    cur = await conn.execute(
        "DELETE FROM noetl.event WHERE (execution_id, event_id) IN (SELECT e.execution_id, e.event_id"
        " FROM noetl.event e"
        " JOIN noetl.execution x ON x.execution_id = e.execution_id"
        " WHERE x.status = ANY(%s) AND e.created_at < now() - %s LIMIT %s)",
        (list(TERMINAL_EXECUTION), timedelta(seconds=older_than_seconds), limit),
    )
    return cur.rowcount
