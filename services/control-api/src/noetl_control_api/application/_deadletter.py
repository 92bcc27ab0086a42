"""``POST /api/internal/commands/{event_id}/fail``: fail a command whose message was dead-lettered.

A worker that parks a command notification in ``NOETL_DLQ`` (past ``max_deliver``, or one
it could not run at all) calls this so the execution does not wait forever for a command
no worker will ever deliver again (architecture.md §5.7). The command is failed through the
same ingest path a worker's ``command.failed`` takes, so the orchestrator advances the
execution (on_error arcs, or the execution fails) and the event log records why.
"""

from __future__ import annotations

import msgspec
from noetl_common import Event, TaskError, utc_now_iso
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Conflict, Forbidden, LeaseHeld, NotFound, StaleAttempt, ValidationFailed
from ._claims import ClaimService
from ._ingest import EventIngest
from ._policy import Principal

#: Longest reason kept (the rest is cut): the reason is an error text, not a payload.
MAX_REASON_CHARS = 4000
#: Who records the failure: the server itself, once the caller's right to ask was checked, so
#: the failure lands whoever holds the lease (the holder may be dead; that is why we are here).
_DEAD_LETTER = Principal(name="control-api:dead-letter", role="admin", source="config")
#: Tries when the command moves (claimed, a new attempt) between our read and our write.
_TRIES = 3


class CommandFailRequest(msgspec.Struct, kw_only=True):
    """Why the command is failed, and who says so (the worker that dead-lettered it)."""

    reason: str
    worker_id: str = "dead-letter"


class CommandFailReply(msgspec.Struct, kw_only=True):
    """``failed`` is False when the command had already finished (then nothing changed)."""

    event_id: int
    command_id: int
    execution_id: int
    failed: bool
    status: str


class DeadLetterService:
    """Fails a command for good, whatever state its lease is in: a dead-lettered one (the
    worker's call) or one the sweeper found stranded or past its timeout."""

    def __init__(self, pool: AsyncConnectionPool, claims: ClaimService, ingest: EventIngest) -> None:
        self._pool = pool
        self._claims = claims
        self._ingest = ingest

    async def fail(self, event_id: int, request: CommandFailRequest, principal: Principal) -> CommandFailReply:
        """Record ``command.failed {type: DeadLettered}`` for the command; idempotent. A worker
        may fail only commands of its own pool."""
        if not request.worker_id or len(request.worker_id) > 200:
            raise ValidationFailed("worker_id must be a non-empty string of at most 200 characters")
        if not request.reason.strip():
            raise ValidationFailed("reason must not be empty")
        return await self.fail_command(
            event_id,
            request.reason,
            kind="DeadLettered",
            worker_id=request.worker_id,
            pool=principal.pool if principal.is_worker else None,
            describe=principal.describe(),
        )

    async def fail_command(
        self,
        event_id: int,
        reason: str,
        *,
        kind: str,
        worker_id: str,
        pool: str | None = None,
        describe: str = "the control plane",
        attempt: int | None = None,
    ) -> CommandFailReply:
        """Record ``command.failed {error: {message: reason, type: kind}}`` for the command's
        current attempt through the ingest (a PENDING command is claimed first by ``worker_id``),
        so the orchestrator applies it like any failed step; idempotent. ``pool``: the command
        must be of that pool (403 otherwise; ``describe`` names who asked). ``attempt``: only that
        attempt is failed; a command claimed again since (a worker took it after all) is left
        alone. 404 unknown, 409 when it kept changing under us."""
        reason = reason[:MAX_REASON_CHARS]
        for _ in range(_TRIES):
            async with self._pool.connection() as conn:
                command = await store.commands.get_by_event(conn, event_id)
            if command is None:
                raise NotFound(f"no command with event_id {event_id}")
            if pool is not None and command.pool != pool:
                raise Forbidden(
                    f"command {command.command_id} is for pool {command.pool!r}; {describe} serves pool {pool!r}"
                )
            reply = CommandFailReply(
                event_id=event_id,
                command_id=command.command_id,
                execution_id=command.execution_id,
                failed=False,
                status=command.status,
            )
            if command.status in store.commands.TERMINAL or attempt not in (None, command.attempt):
                return reply
            current = command.attempt
            if command.status == "PENDING":
                # events are accepted only for a claimed command: take the lease first
                try:
                    current = (await self._claims.claim(event_id, worker_id, _DEAD_LETTER)).attempt
                except (LeaseHeld, Conflict):
                    continue
            event = Event(
                execution_id=command.execution_id,
                event_type="command.failed",
                step=command.step,
                status="FAILED",
                created_at=utc_now_iso(),
                context={"error": TaskError(message=reason, kind=kind).to_json()},
                worker_id=worker_id,
                meta={"command_id": command.command_id, "attempt": current},
            )
            if attempt is not None:
                attempt = current  # the sweeper's own claim took the next attempt
            try:
                accepted = (await self._ingest.ingest([event], _DEAD_LETTER)).accepted
            except (StaleAttempt, Conflict):
                continue  # claimed again meanwhile: read it again
            if not accepted:
                continue  # finished meanwhile: the next read reports its status
            reply.failed, reply.status = True, "FAILED"
            return reply
        raise Conflict(f"command with event_id {event_id} kept changing; try again")
