"""Step logs: kept with the terminal events they came with, read back a page at a time.

The worker sends a command's output beside its terminal events (``EventBatch.logs``); it is
written in the batch's transaction only for a command whose terminal event that transaction
applies: the worker was checked as the lease holder, and a repeated batch (a retry after a
lost reply) writes nothing twice. Text is scrubbed again here: the worker scrubbed it with
the command's secrets, this catches secret-looking strings of a worker that did not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

import msgspec
from noetl_common import StepLogs, scrub_text, utc_now_iso
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import NotFound, ValidationFailed
from ..store import CommandRow, LogInsert

#: Lines of one page, by default and at most.
DEFAULT_PAGE = 1000
MAX_PAGE = 5000


def _time(at: str) -> str:
    """The worker's time of a line, when it is one (else now: a bad time must not fail the batch)."""
    try:
        parsed = datetime.fromisoformat(at)
    except ValueError:
        return utc_now_iso()
    return at if parsed.tzinfo is not None else utc_now_iso()


def staged_logs(
    logs: Sequence[StepLogs], commands: Mapping[int, CommandRow], finished: Mapping[int, str]
) -> list[LogInsert]:
    """The rows of ``logs`` whose command this transaction finishes, in the order sent."""
    rows: list[LogInsert] = []
    for entry in logs:
        command = commands.get(entry.command_id)
        if command is None or entry.command_id not in finished:
            continue  # finished before (a repeated batch) or not this batch's: nothing to keep
        rows += [
            LogInsert(
                execution_id=command.execution_id,
                command_id=command.command_id,
                step=command.step,
                attempt=command.attempt,
                stream=line.stream,
                level=line.level,
                at=_time(line.at),
                text=scrub_text(line.text.replace("\x00", "\\x00")),  # Postgres text holds no NUL
                truncated=line.truncated,
            )
            for line in entry.lines
        ]
    return rows


class LogLine(msgspec.Struct, kw_only=True):
    seq: int
    step: str
    command_id: str
    attempt: int
    stream: str
    level: str | None
    at: str
    text: str


class LogPage(msgspec.Struct, kw_only=True):
    """``GET /api/executions/{id}/logs``: ``next_after`` None when no more lines exist now;
    ``truncated``: some task's output (of ``step``, when asked) was cut at the worker's bound."""

    execution_id: str
    items: list[LogLine]
    next_after: int | None
    truncated: bool


class StepLogService:
    """Reads an execution's step logs."""

    def __init__(self, pool: AsyncConnectionPool, *, page_max_bytes: int) -> None:
        self._pool = pool
        self._page_max_bytes = page_max_bytes

    async def page(self, execution_id: int, *, step: str | None, after: int, limit: int) -> LogPage:
        """Lines after ``after`` (a ``seq``), oldest first, at most ``limit`` and
        ``NOETL_PAGE_MAX_BYTES`` of text (at least one line); 404 for an unknown execution."""
        if not 1 <= limit <= MAX_PAGE:
            raise ValidationFailed(f"limit must be within 1..{MAX_PAGE}, got {limit}")
        if not 0 <= after < 2**63:
            raise ValidationFailed(f"after must be a seq (>= 0), got {after}")
        if step is not None and not (0 < len(step) <= 200 and "\x00" not in step):
            raise ValidationFailed("step must be a step name of 1..200 characters")
        async with self._pool.connection() as conn:
            if not await store.executions.exists(conn, execution_id):
                raise NotFound(f"execution {execution_id} not found")
            rows, more = await store.step_logs.page(
                conn, execution_id, step=step, after=after, limit=limit, max_bytes=self._page_max_bytes
            )
            truncated = await store.step_logs.truncated(conn, execution_id, step)
        items = [
            LogLine(
                seq=r.seq,
                step=r.step,
                command_id=str(r.command_id),
                attempt=r.attempt,
                stream=r.stream,
                level=r.level,
                at=r.at,
                text=r.text,
            )
            for r in rows
        ]
        return LogPage(
            execution_id=str(execution_id),
            items=items,
            next_after=rows[-1].seq if more else None,
            truncated=truncated,
        )
