"""``noetl.step_log``: the lines a step's tasks printed and logged, per execution in ``seq`` order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from ._pages import budgeted, was_cut
from ._time import iso


@dataclass(frozen=True)
class LogInsert:
    """One line to write; ``at`` RFC 3339 text as the worker sent it (Postgres parses it)."""

    execution_id: int
    command_id: int
    step: str
    attempt: int
    stream: str
    level: str | None
    at: str
    text: str
    truncated: bool


@dataclass(frozen=True)
class LogRow:
    seq: int
    step: str
    command_id: int
    attempt: int
    stream: str
    level: str | None
    at: str
    text: str


async def send_insert(conn: AsyncConnection[Any], rows: Sequence[LogInsert]) -> None:
    """Insert ``rows`` in their order, as one statement (sent, not read: pipeline mode).

    The caller holds the row lock of every execution the rows belong to, so ``seq`` values
    of one execution are taken and committed in order (see the migration)."""
    if not rows:
        return
    columns = (
        [r.execution_id for r in rows],
        [r.command_id for r in rows],
        [r.step for r in rows],
        [r.attempt for r in rows],
        [r.stream for r in rows],
        [r.level for r in rows],
        [r.at for r in rows],
        [r.text for r in rows],
        [r.truncated for r in rows],
    )
    await conn.execute(
        "INSERT INTO noetl.step_log"
        " (execution_id, command_id, step, attempt, stream, level, at, text, truncated)"
        " SELECT e, c, s, a, st, l, t, x, tr FROM unnest(%b::bigint[], %b::bigint[], %b::text[],"
        " %b::integer[], %b::text[], %b::text[], %b::timestamptz[], %b::text[], %b::boolean[])"
        " WITH ORDINALITY AS u(e, c, s, a, st, l, t, x, tr, n) ORDER BY n",
        columns,
    )


async def page(
    conn: AsyncConnection[Any], execution_id: int, *, step: str | None, after: int, limit: int, max_bytes: int
) -> tuple[list[LogRow], bool]:
    """Up to ``limit`` lines with ``seq > after`` (of ``step`` only, when given), by ``seq``, and
    no more once their text reaches ``max_bytes`` (at least one); and whether more follow now."""
    cur = await conn.execute(
        budgeted(
            "SELECT seq, step, command_id, attempt, stream, level, at, text, octet_length(text) AS page_size"
            " FROM noetl.step_log WHERE execution_id = %s AND seq > %s AND (%s::text IS NULL OR step = %s::text)"
            " ORDER BY seq LIMIT %s",
            "seq",
        ),
        (execution_id, after, step, step, limit + 1, max_bytes),
    )
    found = await cur.fetchall()
    more = was_cut(found) or len(found) > limit
    rows: list[LogRow] = []
    for seq, name, command_id, attempt, stream, level, at, text, *_ in found[:limit]:
        assert isinstance(at, datetime)
        rows.append(LogRow(seq, name, command_id, attempt, stream, level, iso(at) or "", text))
    return rows, more


async def truncated(conn: AsyncConnection[Any], execution_id: int, step: str | None) -> bool:
    """Whether any task of the execution (of ``step``, when given) had output cut at the bound."""
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM noetl.step_log WHERE execution_id = %s AND truncated"
        " AND (%s::text IS NULL OR step = %s::text))",
        (execution_id, step, step),
    )
    row = await cur.fetchone()
    return bool(row and row[0])
