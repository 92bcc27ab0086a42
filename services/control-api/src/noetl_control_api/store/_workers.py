"""The worker registry ``noetl.worker``."""

from __future__ import annotations

from typing import Any

import msgspec
from noetl_common import WorkerHeartbeat, WorkerRegistration
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from ._time import iso


async def register(conn: AsyncConnection[Any], reg: WorkerRegistration) -> bool:
    """Record a worker; False when its id is registered for another pool (left alone)."""
    cur = await conn.execute(
        "INSERT INTO noetl.worker (worker_id, pool, capacity, hostname, version, status, meta)"
        " VALUES (%s, %s, %s, %s, %s, 'ACTIVE', %s)"
        " ON CONFLICT (worker_id) DO UPDATE SET pool = excluded.pool, capacity = excluded.capacity,"
        " hostname = excluded.hostname, version = excluded.version, status = 'ACTIVE',"
        " meta = excluded.meta, registered_at = now(), heartbeat_at = now(), in_flight = 0"
        " WHERE noetl.worker.pool = excluded.pool",
        (reg.worker_id, reg.pool, reg.capacity, reg.hostname, reg.version, Jsonb(reg.meta)),
    )
    return cur.rowcount > 0


async def heartbeat(conn: AsyncConnection[Any], beat: WorkerHeartbeat) -> bool:
    """Record a heartbeat; a worker unknown here (e.g. after a database restore) is re-added
    when the heartbeat names its pool. Returns False when the worker is unknown and cannot be."""
    if beat.pool is not None:
        cur = await conn.execute(
            "INSERT INTO noetl.worker (worker_id, pool, in_flight) VALUES (%s, %s, %s)"
            " ON CONFLICT (worker_id) DO UPDATE SET heartbeat_at = now(), in_flight = excluded.in_flight,"
            " status = 'ACTIVE' WHERE noetl.worker.pool = excluded.pool",
            (beat.worker_id, beat.pool, beat.in_flight),
        )
    else:
        cur = await conn.execute(
            "UPDATE noetl.worker SET heartbeat_at = now(), in_flight = %s, status = 'ACTIVE'"
            " WHERE worker_id = %s",
            (beat.in_flight, beat.worker_id),
        )
    return cur.rowcount > 0


async def deregister(conn: AsyncConnection[Any], worker_id: str, pool: str | None) -> None:
    """Mark a worker gone (only when it is of ``pool``, unless None)."""
    await conn.execute(
        "UPDATE noetl.worker SET status = 'DEREGISTERED', in_flight = 0, heartbeat_at = now()"
        " WHERE worker_id = %s AND (%s::text IS NULL OR pool = %s)",
        (worker_id, pool, pool),
    )


class WorkerRow(msgspec.Struct, kw_only=True):
    """One registered worker, as listings show it."""

    worker_id: str
    pool: str
    capacity: int
    hostname: str | None
    version: str | None
    status: str
    in_flight: int
    registered_at: str | None
    heartbeat_at: str | None


async def list_workers(
    conn: AsyncConnection[Any], *, pool: str | None, status: str | None
) -> list[WorkerRow]:
    """Registered workers, by pool then id, optionally of one pool or status."""
    cur = await conn.execute(
        "SELECT worker_id, pool, capacity, hostname, version, status, in_flight, registered_at, heartbeat_at"
        " FROM noetl.worker WHERE (%s::text IS NULL OR pool = %s) AND (%s::text IS NULL OR status = %s)"
        " ORDER BY pool, worker_id",
        (pool, pool, status, status),
    )
    return [
        WorkerRow(
            worker_id=r[0],
            pool=r[1],
            capacity=r[2],
            hostname=r[3],
            version=r[4],
            status=r[5],
            in_flight=r[6],
            registered_at=iso(r[7]),
            heartbeat_at=iso(r[8]),
        )
        for r in await cur.fetchall()
    ]
