"""The transactional outbox: rows written with state changes, claimed by the publisher."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec
from noetl_common import OutboxRow
from psycopg import AsyncConnection, AsyncCursor
from psycopg.adapt import Buffer, Loader

from ._db import json_param
from ._notifier import OUTBOX_CHANNEL

OutboxInsert = tuple[
    int, int, str, Any
]  # execution_id, event_id, subject, payload (JSON text as bytes, or data)


class _RawJson(Loader):
    """A ``json`` value as the text it was written as (migration 0018), never parsed: the
    claim's reply carries it to the publisher as it is."""

    def load(self, data: Buffer) -> msgspec.Raw:
        return msgspec.Raw(bytes(data))


async def insert_outbox(conn: AsyncConnection[Any], rows: Sequence[OutboxInsert]) -> set[tuple[int, int]]:
    """Insert rows, skipping duplicates; returns the (execution_id, event_id) keys inserted.

    The NOTIFY rides in the caller's transaction, so publishers wake exactly at commit.
    """
    return await read_keys(await send_outbox(conn, rows))


async def send_outbox(
    conn: AsyncConnection[Any],
    rows: Sequence[OutboxInsert],
    *,
    new_only: bool = False,
    deferred: Mapping[tuple[int, int], float] | None = None,
) -> AsyncCursor[Any] | None:
    """The insert of :func:`insert_outbox`, sent and not read (pipeline mode: its result can
    be read with :func:`read_keys` once a later statement, or the COMMIT, brought it back).

    ``new_only``: every row must be new; a key already recorded fails the transaction with
    ``UniqueViolation`` instead of being skipped, and nothing is returned to read.
    ``deferred``: rows (by key) first due that many seconds from now instead of at once.
    """
    if not rows:
        return None
    delays = deferred or {}
    columns = (
        [r[0] for r in rows],
        [r[1] for r in rows],
        [r[2] for r in rows],
        [json_param(r[3]) for r in rows],  # the recorder's JSON text, written as is
        [delays.get((r[0], r[1]), 0.0) for r in rows],
        OUTBOX_CHANNEL,
    )
    # one statement: the CTE notifies once, and only when a row was actually inserted
    insert = (
        "WITH ins AS (INSERT INTO noetl.outbox (execution_id, event_id, subject, payload, available_at)"
        " SELECT x, e, s, p, now() + d * interval '1 second'"
        " FROM unnest(%b::bigint[], %b::bigint[], %b::text[], %b::json[], %b::float8[]) AS u(x, e, s, p, d)"
    )
    if new_only:
        await conn.execute(
            insert
            + " RETURNING 1), woke AS (SELECT pg_notify(%b, '') FROM (SELECT 1 FROM ins LIMIT 1) AS any_row)"
            " SELECT count(*) FROM woke",
            columns,
        )
        return None
    return await conn.execute(
        insert + " ON CONFLICT (execution_id, event_id) DO NOTHING RETURNING execution_id, event_id),"
        " woke AS (SELECT pg_notify(%b, '') FROM (SELECT 1 FROM ins LIMIT 1) AS any_row)"
        " SELECT ins.execution_id, ins.event_id FROM ins, woke",
        columns,
    )


async def read_keys(cur: AsyncCursor[Any] | None) -> set[tuple[int, int]]:
    """The keys :func:`send_outbox` inserted."""
    return set() if cur is None else {(row[0], row[1]) for row in await cur.fetchall()}


async def claim_outbox(conn: AsyncConnection[Any], limit: int, lease_seconds: float) -> list[OutboxRow]:
    """Lock up to ``limit`` publishable rows as IN_FLIGHT, oldest first.

    Publishable: PENDING and due, or IN_FLIGHT whose lock is older than the lease (the
    publisher that took it died). SKIP LOCKED lets several publishers claim side by side.
    Each kind is read from its own partial index (migration 0016), so a claim never steps
    over rows in flight whose lease still runs; rows one branch locked beyond ``limit`` are
    left as they were (their row locks end with the transaction). Call it inside a
    transaction: it turns bitmap scans off for that transaction only.
    """
    cur = conn.cursor()
    cur.adapters.register_loader("json", _RawJson)
    # The statistics of a queue are always stale: estimating a few pending rows, the planner
    # read the whole backlog through a bitmap scan and sorted it (8,000-9,000 rows for a claim
    # of 1,000 under the event pipeline). Read in index order instead, and stop at the limit.
    await cur.execute("SET LOCAL enable_bitmapscan = off")
    await cur.execute(
        "WITH due AS (SELECT outbox_id FROM noetl.outbox WHERE status = 'PENDING' AND available_at <= now()"
        "             ORDER BY outbox_id LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
        " lapsed AS (SELECT outbox_id FROM noetl.outbox WHERE status = 'IN_FLIGHT' AND locked_at < now() - %(lease)s"
        "            ORDER BY locked_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)"
        " UPDATE noetl.outbox o SET status = 'IN_FLIGHT', locked_at = now(), updated_at = now()"
        " FROM (SELECT outbox_id FROM due UNION ALL SELECT outbox_id FROM lapsed"
        "       ORDER BY outbox_id LIMIT %(limit)s) c"
        " WHERE o.outbox_id = c.outbox_id"
        " RETURNING o.outbox_id, o.event_id, o.execution_id, o.subject, o.payload, o.attempts",
        {"lease": timedelta(seconds=lease_seconds), "limit": limit},
    )
    rows = [
        OutboxRow(outbox_id=r[0], event_id=r[1], execution_id=r[2], subject=r[3], payload=r[4], attempts=r[5])
        for r in await cur.fetchall()
    ]
    rows.sort(key=lambda r: r.outbox_id)  # RETURNING has no order of its own
    return rows


async def mark_published(conn: AsyncConnection[Any], outbox_ids: Sequence[int]) -> int:
    """Mark rows PUBLISHED; rows already published are left alone (idempotent)."""
    if not outbox_ids:
        return 0
    cur = await conn.execute(
        "UPDATE noetl.outbox SET status = 'PUBLISHED', published_at = now(), locked_at = NULL,"
        " updated_at = now() WHERE outbox_id = ANY(%b::bigint[]) AND status <> 'PUBLISHED'",
        (list(outbox_ids),),
    )
    return cur.rowcount


async def mark_failed(
    conn: AsyncConnection[Any], outbox_id: int, error: str, attempts: int, delay_seconds: float
) -> int:
    """Put an unpublished row back to PENDING, due after ``delay_seconds`` (a row marked dead
    stays so)."""
    cur = await conn.execute(
        "UPDATE noetl.outbox SET status = 'PENDING', locked_at = NULL, last_error = %s,"
        " attempts = GREATEST(attempts, %s), available_at = now() + %s, updated_at = now()"
        " WHERE outbox_id = %s AND status IN ('PENDING', 'IN_FLIGHT')",
        (error[:4000], attempts, timedelta(seconds=delay_seconds), outbox_id),
    )
    return cur.rowcount


@dataclass
class DeadRow:
    """What the failure of a dead row's execution names."""

    execution_id: int
    event_id: int
    subject: str
    event_type: str | None
    step: str | None


async def dead_row(conn: AsyncConnection[Any], outbox_id: int) -> DeadRow | None:
    """The row's execution and what it carried (not locked: the execution is locked first)."""
    cur = await conn.execute(
        "SELECT execution_id, event_id, subject, payload->>'event_type', payload->>'step'"
        " FROM noetl.outbox WHERE outbox_id = %s",
        (outbox_id,),
    )
    row = await cur.fetchone()
    return None if row is None else DeadRow(row[0], row[1], row[2], row[3], row[4])


async def mark_dead(conn: AsyncConnection[Any], outbox_id: int, error: str) -> int:
    """Mark an unpublished row FAILED for good: no claim offers it again."""
    cur = await conn.execute(
        "UPDATE noetl.outbox SET status = 'FAILED', locked_at = NULL, last_error = %s, updated_at = now()"
        " WHERE outbox_id = %s AND status IN ('PENDING', 'IN_FLIGHT')",
        (error[:4000], outbox_id),
    )
    return cur.rowcount


async def pending_count(conn: AsyncConnection[Any]) -> int:
    """Rows still to publish (pending or in flight); dead rows (FAILED) are not counted."""
    cur = await conn.execute("SELECT count(*) FROM noetl.outbox WHERE status IN ('PENDING', 'IN_FLIGHT')")
    row = await cur.fetchone()
    return int(row[0]) if row else 0


async def purge_published(conn: AsyncConnection[Any], older_than_seconds: float, limit: int) -> int:
    """Delete up to ``limit`` PUBLISHED rows published more than ``older_than_seconds`` ago.

    Deleting a row also forgets its (execution_id, event_id) key; a worker event re-posted
    after that is recorded again, which is harmless: commands that finished count later
    events as duplicates, and the read model is keyed by event_id.
    """
    cur = await conn.execute(
        "DELETE FROM noetl.outbox WHERE outbox_id IN (SELECT outbox_id FROM noetl.outbox"
        " WHERE status = 'PUBLISHED' AND published_at < now() - %s LIMIT %s FOR UPDATE SKIP LOCKED)",
        (timedelta(seconds=older_than_seconds), limit),
    )
    return cur.rowcount
