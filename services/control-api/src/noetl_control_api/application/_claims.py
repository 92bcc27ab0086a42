"""The command claim protocol (architecture.md §5): leases, attempts, ``command.claimed``."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
from noetl_common import ClaimReply, CommandSpec
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Conflict, Forbidden, LeaseHeld, NotFound, ValidationFailed
from .._metrics import CLAIMS
from ..store import CommandRow
from ._policy import Principal
from ._recorder import ExecutionRef, Recorder
from ._views import CommandView


def _until(timestamp: str | None) -> float:
    """Seconds from now until an RFC 3339 timestamp (0 when unknown or past)."""
    if timestamp is None:
        return 0.0
    return max(0.0, (datetime.fromisoformat(timestamp) - datetime.now(UTC)).total_seconds())


def claim_reply(command: CommandRow, catalog_path: str, lease_seconds: float) -> ClaimReply:
    """What a worker gets for a command it now holds."""
    return ClaimReply(
        execution_id=command.execution_id,
        event_id=command.event_id,
        command_id=command.command_id,
        step=command.step,
        attempt=command.attempt,
        lease_seconds=lease_seconds,
        pool=command.pool,
        tool_kind=command.tool_kind,
        # the worker's input, not a display: scrubbing it would change what runs
        command=msgspec.convert(command.spec, CommandSpec),
        catalog_path=catalog_path,
    )


class ClaimService:
    """Hands out command leases and reports command status."""

    def __init__(self, pool: AsyncConnectionPool, recorder: Recorder, *, lease_seconds: float) -> None:
        self._pool = pool
        self._recorder = recorder
        self._lease = lease_seconds

    async def claim(self, event_id: int, worker_id: str, principal: Principal) -> ClaimReply:
        """Take the lease, or raise 409 (finished, cancelled, held by a live lease) / 404, or
        403 when the command belongs to a pool the principal does not serve."""
        if not worker_id or len(worker_id) > 200:
            raise ValidationFailed("worker_id must be a non-empty string of at most 200 characters")
        pool = principal.pool if principal.is_worker else None
        async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():  # BEGIN rides along
            claimed_row = await store.commands.claim(
                conn, event_id, worker_id, self._lease, claimed_by=principal.name, pool=pool
            )
            if claimed_row is None:
                current = await store.commands.get_by_event(conn, event_id)
                if current is None:
                    CLAIMS.labels("not_found").inc()
                    raise NotFound(f"no command with event_id {event_id}")
                if pool is not None and current.pool != pool:
                    CLAIMS.labels("forbidden").inc()
                    raise Forbidden(
                        f"command {current.command_id} is for pool {current.pool!r};"
                        f" {principal.describe()} serves pool {pool!r}",
                        {"pool": current.pool},
                    )
                CLAIMS.labels("lease_held" if current.status == "CLAIMED" else "conflict").inc()
                if current.status == "CLAIMED":
                    raise LeaseHeld(
                        f"command {current.command_id} is held by worker {current.worker_id!r} until"
                        f" {current.lease_expires_at}; retry after the lease",
                        {
                            "status": current.status,
                            "attempt": current.attempt,
                            "worker_id": current.worker_id,
                            "lease_expires_at": current.lease_expires_at,
                        },
                        retry_after=_until(current.lease_expires_at),
                    )
                raise Conflict(
                    f"command {current.command_id} is {current.status}",
                    {"status": current.status, "attempt": current.attempt},
                )
            command, catalog_path, parent_execution_id = claimed_row
            ref = ExecutionRef(
                execution_id=command.execution_id,
                catalog_path=catalog_path,
                parent_execution_id=parent_execution_id,
            )
            claimed = self._recorder.new_event(
                ref,
                "command.claimed",
                step=command.step,
                status="CLAIMED",
                worker_id=worker_id,
                meta={"command_id": command.command_id, "attempt": command.attempt, "pool": command.pool},
            )
            await self._recorder.send_new_events(conn, [claimed])
        CLAIMS.labels("claimed").inc()
        return claim_reply(command, catalog_path, self._lease)

    async def get(self, event_id: int) -> CommandView:
        async with self._pool.connection() as conn:
            command = await store.commands.get_by_event(conn, event_id)
        if command is None:
            raise NotFound(f"no command with event_id {event_id}")
        return CommandView(
            event_id=command.event_id,
            command_id=command.command_id,
            execution_id=command.execution_id,
            step=command.step,
            status=command.status,
            attempt=command.attempt,
            worker_id=command.worker_id,
            pool=command.pool,
            tool_kind=command.tool_kind,
            lease_expires_at=command.lease_expires_at,
            started_at=command.started_at,
        )
