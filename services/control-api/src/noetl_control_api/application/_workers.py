"""Use cases of the worker pool registry."""

from __future__ import annotations

from noetl_common import POOLS, WorkerHeartbeat, WorkerRegistration
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import NotFound, ValidationFailed


def _check(worker_id: str, pool: str | None) -> None:
    if not worker_id or len(worker_id) > 200:
        raise ValidationFailed("worker_id must be a non-empty string of at most 200 characters")
    if pool is not None and pool not in POOLS:
        raise ValidationFailed(f"pool must be one of {', '.join(POOLS)}, got {pool[:40]!r}")


class WorkerService:
    """Register, heartbeat and deregister workers."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self._pool = pool

    async def register(self, reg: WorkerRegistration) -> None:
        _check(reg.worker_id, reg.pool)
        if not 1 <= reg.capacity < 2**31:
            raise ValidationFailed(f"capacity must be a positive integer, got {reg.capacity}")
        async with self._pool.connection() as conn, conn.transaction():
            await store.workers.register(conn, reg)

    async def heartbeat(self, beat: WorkerHeartbeat) -> None:
        _check(beat.worker_id, beat.pool)
        if not 0 <= beat.in_flight < 2**31:
            raise ValidationFailed(f"in_flight must be a non-negative integer, got {beat.in_flight}")
        async with self._pool.connection() as conn, conn.transaction():
            if not await store.workers.heartbeat(conn, beat):
                raise NotFound(f"worker {beat.worker_id!r} is not registered; register it or send its pool")

    async def deregister(self, worker_id: str) -> None:
        _check(worker_id, None)
        async with self._pool.connection() as conn, conn.transaction():
            await store.workers.deregister(conn, worker_id)
