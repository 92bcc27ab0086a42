"""Execution rows: status, payload and the orchestrator's state as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal

import msgspec
from psycopg import AsyncConnection, AsyncCursor
from psycopg.types.json import Jsonb

from ._db import json_param
from ._pages import budgeted, was_cut
from ._time import iso

_COLUMNS = (
    "execution_id, path, version, status, payload, state, result, error, parent_execution_id,"
    " created_at, updated_at, rerun_of"
)
# what the API shows of the state: a running loop's state holds every in-flight iteration
_VIEW_STATE = "jsonb_build_object('ctx', state->'ctx', 'results', state->'results'),"
_VIEW_COLUMNS = _COLUMNS.replace(" state,", " " + _VIEW_STATE)
#: What a row weighs in a reply: the JSON the view shows.
_VIEW_SIZE = (
    "octet_length(coalesce((state->'ctx')::text, '')) + octet_length(coalesce((state->'results')::text, ''))"
    " + octet_length(coalesce(result::text, '')) + octet_length(coalesce(error, '')) AS page_size"
)


class ExecutionRow(msgspec.Struct, kw_only=True):
    """One ``noetl.execution`` row as the application layer sees it."""

    execution_id: int
    path: str
    version: int
    status: str
    payload: Any
    state: Any
    result: Any
    error: str | None
    parent_execution_id: int | None
    created_at: str | None
    updated_at: str | None
    #: the execution this one restarts from a step (``POST /api/executions/{id}/rerun``)
    rerun_of: int | None = None


def _row(r: Any) -> ExecutionRow:
    return ExecutionRow(
        execution_id=r[0],
        path=r[1],
        version=r[2],
        status=r[3],
        payload=r[4],
        state=r[5],
        result=r[6],
        error=r[7],
        parent_execution_id=r[8],
        created_at=iso(r[9]),
        updated_at=iso(r[10]),
        rerun_of=r[11],
    )


async def insert(
    conn: AsyncConnection[Any],
    *,
    execution_id: int,
    path: str,
    version: int,
    status: str,
    payload: Any,
    state: Any,
    result: Any,
    error: str | None,
    parent_execution_id: int | None,
    timeout_seconds: float | None = None,
    rerun_of: int | None = None,
) -> None:
    """Insert an execution; ``timeout_seconds`` (the playbook's) sets its deadline from now."""
    await conn.execute(
        "INSERT INTO noetl.execution (execution_id, path, version, status, payload, state, result, error,"
        " parent_execution_id, deadline_at, rerun_of)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, now() + %s::interval, %s)",
        (
            execution_id,
            path,
            version,
            status,
            Jsonb(payload),
            json_param(state),
            Jsonb(result),
            error,
            parent_execution_id,
            None if timeout_seconds is None else timedelta(seconds=timeout_seconds),
            rerun_of,
        ),
    )


async def get_view(conn: AsyncConnection[Any], execution_id: int) -> ExecutionRow | None:
    """The row with ``state`` cut to what the API shows (``ctx``, ``results``): a running
    loop's state holds every in-flight iteration, which a status poll need not parse."""
    cur = await conn.execute(
        f"SELECT {_VIEW_COLUMNS} FROM noetl.execution WHERE execution_id = %s", (execution_id,)
    )
    row = await cur.fetchone()
    return None if row is None else _row(row)


async def exists(conn: AsyncConnection[Any], execution_id: int) -> bool:
    cur = await conn.execute("SELECT EXISTS (SELECT 1 FROM noetl.execution WHERE execution_id = %s)", (execution_id,))
    row = await cur.fetchone()
    return bool(row and row[0])


async def get(conn: AsyncConnection[Any], execution_id: int) -> ExecutionRow | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM noetl.execution WHERE execution_id = %s", (execution_id,)
    )
    row = await cur.fetchone()
    return None if row is None else _row(row)


async def lock(
    conn: AsyncConnection[Any],
    execution_ids: Sequence[int],
    mode: Literal["UPDATE", "SHARE"],
    *,
    state: Literal["json", "text", "none"] = "json",
) -> dict[int, ExecutionRow]:
    """Lock execution rows in id order (a fixed order cannot deadlock); returns those found.

    ``state="text"`` returns ``state`` as JSON text and leaves ``payload`` and ``result``
    out (None), for a decoder that goes straight to structs; ``"none"`` leaves all three
    out: a caller that only needs the rows locked does not parse a large state."""
    return await read_locked(await send_lock(conn, execution_ids, mode, state=state))


async def send_lock(
    conn: AsyncConnection[Any],
    execution_ids: Sequence[int],
    mode: Literal["UPDATE", "SHARE"],
    *,
    state: Literal["json", "text", "none"] = "json",
) -> AsyncCursor[Any]:
    """The query of :func:`lock`, sent and not read: in pipeline mode the next statement
    rides with it (see :func:`read_locked`)."""
    clause = "FOR UPDATE" if mode == "UPDATE" else "FOR SHARE"
    slim = {"json": "payload, state, result", "text": "NULL, state::text, NULL", "none": "NULL, NULL, NULL"}
    columns = _COLUMNS.replace("payload, state, result", slim[state])
    return await conn.execute(
        f"SELECT {columns} FROM noetl.execution WHERE execution_id = ANY(%s) ORDER BY execution_id {clause}",
        (sorted(set(execution_ids)),),
    )


async def read_locked(cur: AsyncCursor[Any]) -> dict[int, ExecutionRow]:
    """The rows :func:`send_lock` locked."""
    return {r[0]: _row(r) for r in await cur.fetchall()}


async def update(
    conn: AsyncConnection[Any], execution_id: int, *, status: str, state: Any, result: Any, error: str | None
) -> None:
    await conn.execute(
        "UPDATE noetl.execution SET status = %s, state = %s, result = %s, error = %s, updated_at = now()"
        " WHERE execution_id = %s",
        (status, json_param(state), Jsonb(result), error, execution_id),
    )


async def list_recent(
    conn: AsyncConnection[Any],
    *,
    limit: int,
    status: str | None,
    path: str | None,
    max_bytes: int,
    parent: int | None = None,
    since: str | None = None,
    until: str | None = None,
    before: int | None = None,
    offset: int = 0,
) -> tuple[list[ExecutionRow], bool]:
    """Newest first (snowflake ids grow with time), optionally filtered (status, path, parent,
    created at or after ``since`` and before ``until``, ids below the cursor ``before``), after
    skipping ``offset``; their state cut to the view (see :func:`get_view`); at most ``limit``,
    and no more once the rows' JSON reaches ``max_bytes`` (at least one). The flag says whether
    more rows may follow (the page is full or was cut)."""
    cur = await conn.execute(
        budgeted(
            f"SELECT {_VIEW_COLUMNS}, {_VIEW_SIZE} FROM noetl.execution"
            " WHERE (%s::text IS NULL OR status = %s) AND (%s::text IS NULL OR path = %s)"
            " AND (%s::bigint IS NULL OR parent_execution_id = %s)"
            " AND (%s::timestamptz IS NULL OR created_at >= %s::timestamptz)"
            " AND (%s::timestamptz IS NULL OR created_at < %s::timestamptz)"
            " AND (%s::bigint IS NULL OR execution_id < %s)"
            " ORDER BY execution_id DESC OFFSET %s LIMIT %s",
            "execution_id DESC",
        ),
        (
            status,
            status,
            path,
            path,
            parent,
            parent,
            since,
            since,
            until,
            until,
            before,
            before,
            offset,
            limit,
            max_bytes,
        ),
    )
    rows = await cur.fetchall()
    return [_row(r) for r in rows], len(rows) == limit or was_cut(rows)


async def running_descendants(conn: AsyncConnection[Any], execution_id: int) -> list[int]:
    """Ids of RUNNING executions below ``execution_id`` (children, grandchildren, ...)."""
    cur = await conn.execute(
        "WITH RECURSIVE tree AS ("
        " SELECT execution_id, status FROM noetl.execution WHERE parent_execution_id = %s"
        " UNION SELECT e.execution_id, e.status FROM noetl.execution e"
        " JOIN tree t ON e.parent_execution_id = t.execution_id)"
        " SELECT execution_id FROM tree WHERE status = 'RUNNING'",
        (execution_id,),
    )
    return [r[0] for r in await cur.fetchall()]
