"""Snowflake node leases ``noetl.node_lease``: one live holder per 10-bit node id."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

#: Node ids 0..1023 (10 bits).
NODE_COUNT = 1024


async def lease(conn: AsyncConnection[Any], holder: str, ttl_seconds: float) -> int | None:
    """The holder's node id, renewed; else the lowest free or expired one; None when all
    1024 are held. Serialised by a transaction-level advisory lock, so two callers never
    take the same id (call inside a transaction)."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('noetl.node_lease'))")
    cur = await conn.execute(
        "UPDATE noetl.node_lease SET expires_at = now() + make_interval(secs => %s)"
        " WHERE holder = %s RETURNING node_id",
        (ttl_seconds, holder),
    )
    row = await cur.fetchone()
    if row is not None:
        return int(row[0])
    cur = await conn.execute(
        "INSERT INTO noetl.node_lease (node_id, holder, expires_at)"
        " SELECT n, %s, now() + make_interval(secs => %s) FROM generate_series(0, %s) AS n"
        " WHERE NOT EXISTS (SELECT 1 FROM noetl.node_lease l WHERE l.node_id = n AND l.expires_at > now())"
        " ORDER BY n LIMIT 1"
        " ON CONFLICT (node_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,"
        " leased_at = now()"
        " RETURNING node_id",
        (holder, ttl_seconds, NODE_COUNT - 1),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def renew(conn: AsyncConnection[Any], holder: str, ttl_seconds: float) -> int | None:
    """Extend the holder's lease; None when it holds none (expired and taken, or never leased)."""
    cur = await conn.execute(
        "UPDATE noetl.node_lease SET expires_at = now() + make_interval(secs => %s)"
        " WHERE holder = %s RETURNING node_id",
        (ttl_seconds, holder),
    )
    row = await cur.fetchone()
    return None if row is None else int(row[0])


async def release(conn: AsyncConnection[Any], holder: str) -> None:
    """Give the holder's node id back at once (a clean shutdown)."""
    await conn.execute("DELETE FROM noetl.node_lease WHERE holder = %s", (holder,))
