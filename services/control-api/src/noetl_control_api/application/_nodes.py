"""Snowflake node ids leased from Postgres (``noetl.node_lease``) so live processes never share one.

The control-api leases one for itself at start (unless ``NOETL_SNOWFLAKE_NODE_ID`` or
``NOETL_SHARD_ID`` names it) and renews it every third of ``NOETL_NODE_LEASE_SECONDS``;
workers get theirs in the ``POST /api/worker/pool/register`` reply and renew it with their
heartbeats (``WorkerService``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket

import structlog
from noetl_common import Snowflake
from psycopg_pool import AsyncConnectionPool

from .. import store

_log = structlog.get_logger(service="noetl-control-api")


class NodeLease:
    """The control-api's own node lease: taken at start, renewed in the background, released at stop."""

    def __init__(self, pool: AsyncConnectionPool, ids: Snowflake, *, ttl_seconds: float) -> None:
        self._pool = pool
        self._ids = ids
        self._ttl = ttl_seconds
        self.holder = f"control-api:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._task: asyncio.Task[None] | None = None

    async def _lease(self) -> int | None:
        async with self._pool.connection() as conn, conn.transaction():
            return await store.nodes.lease(conn, self.holder, self._ttl)

    async def start(self) -> None:
        """Lease a node id and switch the id generator to it; keep the hashed one if all are held."""
        node = await self._lease()
        if node is None:
            _log.error("snowflake_node_unavailable", reason="every node id is leased", kept="hashed", node_id=self._ids.node_id)
        else:
            self._ids.set_node(node)
            _log.info("snowflake_node_leased", node_id=node, holder=self.holder)
        self._task = asyncio.create_task(self._renew())

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._ttl / 3)  # renewal period, not a synchronisation
            try:
                node = await self._lease()  # renews ours, or takes a new one if ours was lost
            except Exception as exc:  # database down: try again next period
                _log.warning("snowflake_node_renewal_failed", error=repr(exc))
                continue
            if node is not None and node != self._ids.node_id:
                _log.warning("snowflake_node_lease_lost", leased_instead=node)
                self._ids.set_node(node)

    async def stop(self) -> None:
        """Stop renewing and give the id back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            async with self._pool.connection(timeout=5.0) as conn, conn.transaction():
                await store.nodes.release(conn, self.holder)


def worker_holder(worker_id: str) -> str:
    """The lease holder name of a worker."""
    return f"worker:{worker_id}"


__all__ = ["NodeLease", "worker_holder"]
