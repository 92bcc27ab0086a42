"""Use cases of the worker pool registry."""

from __future__ import annotations

import msgspec
from noetl_common import POOLS, WorkerHeartbeat, WorkerRegistration
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Conflict, Forbidden, NotFound, ValidationFailed
from ._nodes import worker_holder
from ._policy import Principal


class WorkerRegisterReply(msgspec.Struct, kw_only=True):
    """``node_id``: the Snowflake node id leased to the worker (None when all 1024 are held);
    the worker's heartbeats renew it for ``node_lease_seconds`` each."""

    worker_id: str
    node_id: int | None
    node_lease_seconds: float


def _check(worker_id: str, pool: str | None, principal: Principal) -> None:
    if not worker_id or len(worker_id) > 200:
        raise ValidationFailed("worker_id must be a non-empty string of at most 200 characters")
    if pool is not None and pool not in POOLS:
        raise ValidationFailed(f"pool must be one of {', '.join(POOLS)}, got {pool[:40]!r}")
    if pool is not None and pool != principal.pool:
        raise Forbidden(f"{principal.describe()} may not act for pool {pool!r}")


class WorkerService:
    """Register, heartbeat and deregister workers."""

    def __init__(self, pool: AsyncConnectionPool, *, node_lease_seconds: float = 300.0) -> None:
        self._pool = pool
        self._node_ttl = node_lease_seconds

    async def register(self, reg: WorkerRegistration, principal: Principal) -> WorkerRegisterReply:
        """Record the worker and lease it a Snowflake node id (the same one while it holds it)."""
        _check(reg.worker_id, reg.pool, principal)
        if not 1 <= reg.capacity < 2**31:
            raise ValidationFailed(f"capacity must be a positive integer, got {reg.capacity}")
        async with self._pool.connection() as conn, conn.transaction():
            if not await store.workers.register(conn, reg):
                raise Conflict(f"worker id {reg.worker_id!r} is registered for another pool")
            node = await store.nodes.lease(conn, worker_holder(reg.worker_id), self._node_ttl)
        return WorkerRegisterReply(worker_id=reg.worker_id, node_id=node, node_lease_seconds=self._node_ttl)

    async def heartbeat(self, beat: WorkerHeartbeat, principal: Principal) -> None:
        _check(beat.worker_id, beat.pool, principal)
        if beat.pool is None:
            beat = msgspec.structs.replace(beat, pool=principal.pool)
        if not 0 <= beat.in_flight < 2**31:
            raise ValidationFailed(f"in_flight must be a non-negative integer, got {beat.in_flight}")
        async with self._pool.connection() as conn, conn.transaction():
            if not await store.workers.heartbeat(conn, beat):
                raise NotFound(f"worker {beat.worker_id!r} is not registered; register it or send its pool")
            await store.nodes.renew(conn, worker_holder(beat.worker_id), self._node_ttl)

    async def deregister(self, worker_id: str, principal: Principal) -> None:
        _check(worker_id, None, principal)
        async with self._pool.connection() as conn, conn.transaction():
            await store.workers.deregister(conn, worker_id, principal.pool)
            await store.nodes.release(conn, worker_holder(worker_id))
