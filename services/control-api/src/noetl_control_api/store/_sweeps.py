"""What the sweeper looks for and changes (docs/sweeper.md): stranded commands, executions past
their deadline, the round's leader lock and the schedule of periodic jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

#: Any constant works, as long as every control-api process uses the same.
_LEADER_LOCK = "SELECT pg_try_advisory_xact_lock(hashtext('noetl.sweeper'))"
#: Open commands, spelled so the planner can use the partial index on open commands.
_OPEN = "c.status IN ('PENDING', 'CLAIMED')"


async def try_lead(conn: AsyncConnection[Any]) -> bool:
    """Take the round's leader lock for the caller's transaction; False when another holds it."""
    cur = await conn.execute(_LEADER_LOCK)
    row = await cur.fetchone()
    return bool(row and row[0])


async def take_scheduled(conn: AsyncConnection[Any], name: str, interval_seconds: float) -> bool:
    """True, and the job counts as run now, when job ``name`` last ran ``interval_seconds`` ago or
    never; False otherwise. A conditional update: of concurrent callers one gets True."""
    cur = await conn.execute(
        "INSERT INTO noetl.sweep_schedule AS s (name, last_run_at) VALUES (%s, now())"
        " ON CONFLICT (name) DO UPDATE SET last_run_at = now() WHERE s.last_run_at < now() - %s"
        " RETURNING 1",
        (name, timedelta(seconds=interval_seconds)),
    )
    return await cur.fetchone() is not None


async def overdue_executions(conn: AsyncConnection[Any], limit: int) -> list[tuple[int, float]]:
    """``(execution_id, timeout seconds)`` of running executions past their deadline."""
    cur = await conn.execute(
        "SELECT execution_id, extract(epoch FROM deadline_at - created_at)::float8 FROM noetl.execution"
        " WHERE status = 'RUNNING' AND deadline_at IS NOT NULL AND deadline_at < now()"
        " ORDER BY deadline_at LIMIT %s",
        (limit,),
    )
    return [(r[0], r[1]) for r in await cur.fetchall()]


async def orphaned_commands(
    conn: AsyncConnection[Any], absent_seconds: float, limit: int
) -> list[tuple[int, int, str]]:
    """``(event_id, attempt, pool)`` of unheld commands (PENDING, or CLAIMED with an expired lease) issued
    more than ``absent_seconds`` ago, of a pool no worker has sent a heartbeat from since then."""
    absent = timedelta(seconds=absent_seconds)
    cur = await conn.execute(
        f"SELECT c.event_id, c.attempt, c.pool FROM noetl.command c WHERE {_OPEN}"
        " AND (c.status = 'PENDING' OR c.lease_expires_at < now()) AND c.created_at < now() - %s"
        " AND NOT EXISTS (SELECT 1 FROM noetl.worker w WHERE w.pool = c.pool AND w.heartbeat_at > now() - %s)"
        " ORDER BY c.command_id LIMIT %s",
        (absent, absent, limit),
    )
    return [(r[0], r[1], r[2]) for r in await cur.fetchall()]


@dataclass(frozen=True)
class Overdue:
    """An open command past its step's timeout."""

    event_id: int
    attempt: int
    step: str
    timeout_seconds: float
    open_seconds: float


async def overdue_commands(
    conn: AsyncConnection[Any], default_timeout: float, grace_seconds: float, limit: int
) -> list[Overdue]:
    """Open commands whose current attempt (its start, else the command's issue) is older than
    their step's timeout (``spec.timeout_seconds``, else ``default_timeout``) plus the grace."""
    cur = await conn.execute(
        "SELECT c.event_id, c.attempt, c.step, t.seconds,"
        " extract(epoch FROM now() - coalesce(c.started_at, c.created_at))::float8"
        " FROM noetl.command c, LATERAL (SELECT coalesce(CASE WHEN jsonb_typeof(c.spec->'timeout_seconds')"
        " = 'number' THEN (c.spec->>'timeout_seconds')::float8 END, %s::float8) AS seconds) t"
        f" WHERE {_OPEN}"
        " AND coalesce(c.started_at, c.created_at) < now() - make_interval(secs => t.seconds + %s)"
        " ORDER BY c.command_id LIMIT %s",
        (default_timeout, grace_seconds, limit),
    )
    return [Overdue(*r) for r in await cur.fetchall()]


@dataclass(frozen=True)
class Stranded:
    """A command to notify again, locked, with what its notification and event need."""

    command_id: int
    event_id: int
    execution_id: int
    step: str
    pool: str
    attempt: int
    worker_id: str | None
    #: notifications re-published since the command was issued or handed back
    republished: int
    lease_expires_at: datetime | None
    path: str
    parent_execution_id: int | None


_STRANDED = (
    "SELECT c.command_id, c.event_id, c.execution_id, c.step, c.pool, c.attempt, c.worker_id,"
    " c.republished, c.lease_expires_at, e.path, e.parent_execution_id"
    " FROM noetl.command c JOIN noetl.execution e ON e.execution_id = c.execution_id"
)


async def lock_expired_leases(conn: AsyncConnection[Any], wait_seconds: float, limit: int) -> list[Stranded]:
    """Lock CLAIMED commands of running executions whose lease expired ``wait_seconds`` ago
    (rows another transaction holds are skipped: it is changing them)."""
    cur = await conn.execute(
        _STRANDED + " WHERE c.status = 'CLAIMED' AND c.lease_expires_at < now() - %s AND e.status = 'RUNNING'"
        " ORDER BY c.command_id LIMIT %s FOR UPDATE OF c SKIP LOCKED",
        (timedelta(seconds=wait_seconds), limit),
    )
    return [Stranded(*r) for r in await cur.fetchall()]


async def lock_unclaimed(
    conn: AsyncConnection[Any], wait_seconds: float, max_factor: int, live_seconds: float, limit: int
) -> list[Stranded]:
    """Lock PENDING commands of running executions whose latest notification was published (or,
    when its row is gone, written) longer ago than ``wait_seconds`` doubled per re-publish, at
    most ``max_factor`` times, while a worker of their pool heard from within ``live_seconds``
    has a free slot (it would have claimed a message that reached it).

    Left alone: a command whose notification is still unpublished (the publisher is behind, the
    message is not lost), and one whose pool's live workers are all busy (its message is most
    likely queued behind theirs; a duplicate would only wait there too)."""
    wait = "make_interval(secs => %s * least(power(2, c.republished), %s))"
    cur = await conn.execute(
        _STRANDED + " LEFT JOIN noetl.outbox o"
        "  ON o.execution_id = c.execution_id AND o.event_id = coalesce(c.notice_id, c.command_id)"
        " WHERE c.status = 'PENDING' AND e.status = 'RUNNING' AND (o.outbox_id IS NULL OR o.status = 'PUBLISHED')"
        # published after it was written: the cheap test first
        f" AND c.notified_at < now() - {wait} AND coalesce(o.published_at, c.notified_at) < now() - {wait}"
        " AND EXISTS (SELECT 1 FROM noetl.worker w WHERE w.pool = c.pool AND w.status = 'ACTIVE'"
        "             AND w.heartbeat_at > now() - %s AND w.in_flight < w.capacity)"
        " ORDER BY c.command_id LIMIT %s FOR UPDATE OF c SKIP LOCKED",
        (wait_seconds, max_factor, wait_seconds, max_factor, timedelta(seconds=live_seconds), limit),
    )
    return [Stranded(*r) for r in await cur.fetchall()]


async def hand_back(conn: AsyncConnection[Any], notices: Sequence[tuple[int, int]]) -> None:
    """Locked CLAIMED commands become PENDING with no holder and a new notification
    (``(command_id, notice_id)``); the next claim takes attempt + 1."""
    if notices:
        await conn.execute(
            "UPDATE noetl.command c SET status = 'PENDING', worker_id = NULL, claimed_by = NULL,"
            " lease_expires_at = NULL, started_at = NULL, notified_at = now(), notice_id = u.notice,"
            " republished = 0, updated_at = now()"
            " FROM unnest(%b::bigint[], %b::bigint[]) AS u(command_id, notice) WHERE c.command_id = u.command_id",
            ([n[0] for n in notices], [n[1] for n in notices]),
        )


async def renotified(conn: AsyncConnection[Any], notices: Sequence[tuple[int, int]]) -> None:
    """Locked PENDING commands got a new notification (``(command_id, notice_id)``)."""
    if notices:
        await conn.execute(
            "UPDATE noetl.command c SET notified_at = now(), notice_id = u.notice,"
            " republished = c.republished + 1, updated_at = now()"
            " FROM unnest(%b::bigint[], %b::bigint[]) AS u(command_id, notice) WHERE c.command_id = u.command_id",
            ([n[0] for n in notices], [n[1] for n in notices]),
        )
