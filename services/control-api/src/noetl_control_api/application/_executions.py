"""Use cases of executions: start, read (and wait for the end), list, cancel, replay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import msgspec
from noetl_common import Event, scrub
from noetl_common.templating import DEFAULT_LIMITS, TemplateLimits
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Forbidden, NotFound, PayloadTooLarge, ValidationFailed
from .._metrics import EXECUTION_WAITERS, EXECUTION_WAITS
from ..orchestrator import cancel_execution, fail_execution, start_execution, state_from_json
from ..store import ExecutionRow, KeyedNotifier
from ._ids import optional_id
from ._playbooks import PlaybookCache
from ._policy import Policy, Principal, require
from ._recorder import TERMINAL_STATUSES, ExecutionRef, Recorder
from ._replay import ReplayReply, replay_execution
from ._views import CancelReply, ExecuteReply, ExecutionList, ExecutionView

STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CANCELLED")
MAX_VERSION = 2**31 - 1
#: longest ``GET /api/executions/{id}?wait=`` (seconds); a client wanting longer asks again
MAX_WAIT_SECONDS = 60.0
#: most rows of one page of ``GET /api/executions`` and ``GET /api/executions/{id}/events``
MAX_PAGE = 1000
#: deepest ``offset`` of ``GET /api/executions``: deeper pages go on with the ``before`` cursor
MAX_OFFSET = 100_000
#: longest cancel reason or imposed failure kept (it is written into an event)
MAX_REASON_CHARS = 4000
# when the listener is down, re-read this often instead of trusting a wake-up that may not come
_FALLBACK_POLL_SECONDS = 1.0


def check_version(version: int | None) -> int | None:
    """Catalog versions are positive 32-bit integers."""
    if version is not None and not 0 < version <= MAX_VERSION:
        raise ValidationFailed(f"version must be within 1..{MAX_VERSION}, got {version}")
    return version


def view(row: ExecutionRow) -> ExecutionView:
    """The public shape of an execution, scrubbed; ``ctx``/``results`` come from the state."""
    state = row.state or {}
    return ExecutionView(
        execution_id=row.execution_id,
        path=row.path,
        version=row.version,
        status=row.status,
        result=scrub(row.result),
        error=None if row.error is None else scrub(row.error),
        ctx=scrub(state.get("ctx") or {}),
        results=scrub(state.get("results") or {}),
        created_at=row.created_at,
        updated_at=row.updated_at,
        parent_execution_id=row.parent_execution_id,
        rerun_of=None if row.rerun_of is None else str(row.rerun_of),
    )


class ExecutionService:
    """Starts executions and answers questions about them."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        playbooks: PlaybookCache,
        recorder: Recorder,
        done: KeyedNotifier,
        policy: Policy,
        *,
        payload_max_bytes: int,
        page_max_bytes: int,
        template_limits: TemplateLimits = DEFAULT_LIMITS,
    ) -> None:
        self._pool = pool
        self._policy = policy
        self._playbooks = playbooks
        self._recorder = recorder
        self._done = done
        self._payload_max = payload_max_bytes
        self._page_max = page_max_bytes
        self._limits = template_limits
        self._closing = False
        #: how many reads are held waiting for their execution's end
        self.waiting = 0
        #: notified whenever a read parks to wait; lets callers observe held requests
        self.parked = asyncio.Condition()

    async def execute(
        self,
        path: str,
        version: int | None,
        payload: dict[str, Any] | None,
        parent_execution_id: object,
        execution_pool: str | None = None,
        *,
        principal: Principal,
    ) -> ExecuteReply:
        """Create the execution and everything its start decides, in one transaction.

        A worker may start only a child of an execution in which it holds a live lease (the
        ``playbook`` tool); everyone else needs ``execution.start`` on the playbook's path."""
        check_version(version)
        _check_pool_override(path, execution_pool)
        parent = optional_id(parent_execution_id, "parent_execution_id")
        payload = payload or {}
        size = len(msgspec.json.encode(payload))
        if size > self._payload_max:
            # refused at the door: its events (execution_requested, started) would carry it
            raise PayloadTooLarge(
                f"the payload is {size} bytes, over NOETL_EXECUTE_PAYLOAD_MAX_BYTES={self._payload_max}",
                {"field": "payload", "limit": self._payload_max},
            )
        async with self._pool.connection() as conn:
            entry = await store.catalog.get(conn, path, version)
            if principal.is_worker:
                held = None if parent is None else await store.commands.held_in(conn, parent, principal.name)
                if held is None:
                    raise Forbidden(
                        f"{principal.describe()} may start only a child of an execution whose command it holds",
                        {"field": "parent_execution_id"},
                    )
        require(self._policy, principal, "execution.start_child" if principal.is_worker else "execution.start", path)
        if entry is None:
            which = f"version {version}" if version is not None else "any version"
            raise NotFound(f"no catalog entry for path {path[:200]!r} ({which})")
        playbook = self._playbooks.get(entry.path, entry.version, entry.content)
        execution_id = self._recorder.ids.next_id()
        ref = ExecutionRef(execution_id=execution_id, catalog_path=entry.path, parent_execution_id=parent)
        decision = start_execution(
            playbook, execution_id=execution_id, payload=payload, catalog_path=entry.path, limits=self._limits
        )
        requested = self._recorder.new_event(
            ref,
            "playbook.execution_requested",
            status="RUNNING",
            context={"path": entry.path, "version": entry.version, "payload": payload},
        )
        async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():  # one round trip
            # the decision written: a failure instead when one of its events was too large
            decision = await self._recorder.write_decision(
                conn,
                ref,
                decision,
                leading=[requested],
                insert_execution={"version": entry.version, "payload": payload, "timeout": playbook.timeout},
            )
        return ExecuteReply(
            execution_id=execution_id, status=decision.status, path=entry.path, version=entry.version
        )

    async def get(self, execution_id: int, wait: float | None = None) -> ExecutionView:
        """The execution; with ``wait``, a RUNNING one is held until it ends or ``wait`` seconds pass.

        Its waiters are woken by the NOTIFY of the execution's status change (any replica's
        write), registered before each read, so an end between the read and the wait is not
        missed. No pool connection is held while waiting."""
        if wait is None:
            return view(await self._read(execution_id))
        if not 0 < wait <= MAX_WAIT_SECONDS:
            raise ValidationFailed(
                f"wait must be within (0, {MAX_WAIT_SECONDS:g}] seconds, got {wait:g}", {"field": "wait"}
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            with self._done.watch(execution_id) as done:
                row = await self._read(execution_id)
                remaining = deadline - loop.time()
                if row.status != "RUNNING" or remaining <= 0 or self._closing:
                    return view(row)
                timeout = remaining if self._done.connected else min(remaining, _FALLBACK_POLL_SECONDS)
                await self._park(done, timeout)

    def close(self) -> None:
        """Stop waiting: held reads answer at once (with the status they read) so shutdown need not wait."""
        self._closing = True
        self._done.wake()

    async def _read(self, execution_id: int) -> ExecutionRow:
        async with self._pool.connection() as conn:
            row = await store.executions.get_view(conn, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id} not found")
        return row

    async def _park(self, done: asyncio.Event, timeout: float) -> None:
        self.waiting += 1
        EXECUTION_WAITERS.inc()
        async with self.parked:
            self.parked.notify_all()
        try:
            await asyncio.wait_for(done.wait(), timeout)
            EXECUTION_WAITS.labels("woken").inc()
        except TimeoutError:
            EXECUTION_WAITS.labels("timeout").inc()
        finally:
            self.waiting -= 1
            EXECUTION_WAITERS.dec()

    async def list_recent(
        self,
        *,
        limit: int,
        status: str | None,
        path: str | None,
        parent: int | None = None,
        since: str | None = None,
        until: str | None = None,
        before: int | None = None,
        offset: int = 0,
    ) -> ExecutionList:
        """Newest first, filtered; page on with ``before`` = ``next_cursor`` (or with ``offset``)."""
        if status is not None and status.upper() not in STATUSES:
            raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}, got {status[:40]!r}")
        _check_limit(limit)
        if not 0 <= offset <= MAX_OFFSET:
            raise ValidationFailed(
                f"offset must be within 0..{MAX_OFFSET}, got {offset}", {"field": "offset"}
            )
        async with self._pool.connection() as conn:
            rows, more = await store.executions.list_recent(
                conn,
                limit=limit,
                status=status.upper() if status else None,
                path=path,
                max_bytes=self._page_max,
                parent=parent,
                since=_timestamp(since, "since"),
                until=_timestamp(until, "until"),
                before=before,
                offset=offset,
            )
        return ExecutionList(
            executions=[view(r) for r in rows], next_cursor=rows[-1].execution_id if rows and more else None
        )

    async def events(
        self, execution_id: int, *, after: int, limit: int, event_type: str | None = None, step: str | None = None
    ) -> list[Event]:
        """Projected events (of ``event_type``: a type or a prefix ending in ``.``, and ``step``);
        empty for an execution whose events are not projected yet. A page ends at ``limit``
        events or at NOETL_PAGE_MAX_BYTES (at least one): ask again with ``after`` = the last id."""
        _check_limit(limit)
        for name, value in (("event_type", event_type), ("step", step)):
            if value is not None and not 0 < len(value) <= 200:
                raise ValidationFailed(f"{name} must be 1..200 characters", {"field": name})
        if not 0 <= after < 2**63:
            raise ValidationFailed(f"after must be a non-negative 63-bit id, got {after}")
        async with self._pool.connection() as conn:
            if await store.executions.get(conn, execution_id) is None:
                raise NotFound(f"execution {execution_id} not found")
            events = await store.events.list_events(
                conn, execution_id, after, limit, self._page_max, event_type=event_type, step=step
            )
        return [scrub_event(e) for e in events]

    async def replay(self, execution_id: int) -> ReplayReply:
        """Rebuild the execution's state from its projected events and diff it with the stored one.

        Scrubbed like every other reply: the states hold the workload, which may carry secrets."""
        async with self._pool.connection() as conn:
            reply = await replay_execution(conn, self._playbooks, execution_id, self._limits)
        return msgspec.convert(scrub(msgspec.to_builtins(reply)), type(reply))

    async def cancel(self, execution_id: int, reason: str | None, principal: Principal) -> CancelReply:
        """Cancel a running execution and its running child executions (a child outliving its
        parent would be an orphan nobody waits for); a finished execution is returned unchanged.
        The reply names every execution this cancel ended."""
        reason = (reason or "cancelled by request")[:MAX_REASON_CHARS]
        cancelled: list[str] = []
        async with self._pool.connection() as conn, conn.transaction():
            rows = await store.executions.lock(conn, [execution_id], "UPDATE")
            row = rows.get(execution_id)
            if row is None:
                raise NotFound(f"execution {execution_id} not found")
            require(self._policy, principal, "execution.cancel", row.path)
            if row.status not in TERMINAL_STATUSES:
                descendants = await store.executions.running_descendants(conn, execution_id)
                children = await store.executions.lock(conn, descendants, "UPDATE")
                await self._cancel_one(conn, row, reason)
                cancelled.append(str(execution_id))
                for child in children.values():
                    if child.status not in TERMINAL_STATUSES:
                        await self._cancel_one(
                            conn, child, f"parent execution {execution_id} cancelled: {reason}"
                        )
                        cancelled.append(str(child.execution_id))
                row = await store.executions.get(conn, execution_id)
                assert row is not None
        message = (
            f"cancelled {len(cancelled)} execution(s)"
            if cancelled
            else f"execution {execution_id} had already ended {row.status}"
        )
        return CancelReply(
            **msgspec.structs.asdict(view(row)), cancelled_executions=cancelled, message=message
        )

    async def fail_locked(self, conn: Any, execution_id: int, error: str, *, cause: str) -> bool:
        """Fail a RUNNING execution the control plane cannot carry on (``cause`` says why), in
        the caller's transaction; False, and nothing changes, when it has ended already."""
        rows = await store.executions.lock(conn, [execution_id], "UPDATE")
        row = rows.get(execution_id)
        if row is None or row.status in TERMINAL_STATUSES:
            return False
        decision = fail_execution(state_from_json(row.state), error[:MAX_REASON_CHARS], cause=cause)
        ref = ExecutionRef(
            execution_id=row.execution_id, catalog_path=row.path, parent_execution_id=row.parent_execution_id
        )
        await self._recorder.write_decision(conn, ref, decision)
        return True

    async def time_out(self, execution_id: int, error: str, *, cause: str) -> bool:
        """Fail a RUNNING execution past its deadline and cancel its running child executions
        (nobody waits for them any more), in one transaction; False when it had ended already."""
        async with self._pool.connection() as conn, conn.transaction():
            if not await self.fail_locked(conn, execution_id, error, cause=cause):
                return False
            # the parent is locked first, then its descendants in id order, as cancel() does
            descendants = await store.executions.running_descendants(conn, execution_id)
            children = await store.executions.lock(conn, descendants, "UPDATE")
            for child in children.values():
                if child.status not in TERMINAL_STATUSES:
                    await self._cancel_one(conn, child, f"parent execution {execution_id} failed: {error}")
        return True

    async def _cancel_one(self, conn: Any, row: ExecutionRow, reason: str) -> None:
        playbook = self._playbooks.cached(row.path, row.version)
        if playbook is None:
            entry = await store.catalog.get(conn, row.path, row.version)
            assert entry is not None  # the foreign key guarantees it
            playbook = self._playbooks.get(entry.path, entry.version, entry.content)
        decision = cancel_execution(playbook, state_from_json(row.state), reason)
        ref = ExecutionRef(
            execution_id=row.execution_id, catalog_path=row.path, parent_execution_id=row.parent_execution_id
        )
        await self._recorder.write_decision(conn, ref, decision)


def _timestamp(value: str | None, field: str) -> str | None:
    """An ISO 8601 time (a date alone is its midnight, a time without zone is UTC)."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationFailed(
            f"{field} must be an ISO 8601 time, got {value[:40]!r}", {"field": field}
        ) from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).isoformat()


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed(f"limit must be within 1..{MAX_PAGE}, got {limit}", {"field": "limit"})


def _check_pool_override(path: str, execution_pool: str | None) -> None:
    """Refuse ``execution_pool`` overrides: onto ``system`` for a playbook outside ``system/``
    (403: user code must never run on system workers), and any other that differs from where
    the playbook's commands are routed (422: routing follows tool kinds and the catalog path)."""
    if execution_pool is None:
        return
    system_playbook = path.startswith("system/")
    if execution_pool == "system" and not system_playbook:
        raise Forbidden(
            "execution_pool 'system' is refused for a playbook outside system/",
            {"field": "execution_pool"},
        )
    if execution_pool != "system" or not system_playbook:
        raise ValidationFailed(
            f"execution_pool {execution_pool[:40]!r} cannot be overridden at execute time: commands are"
            " routed by their tool kinds (system/ playbooks always run on the system pool)",
            {"field": "execution_pool"},
        )


def scrub_event(event: Event) -> Event:
    """An event with its free-form fields scrubbed, for responses."""
    return Event(
        execution_id=event.execution_id,
        event_type=event.event_type,
        event_id=event.event_id,
        step=event.step,
        status=event.status,
        created_at=event.created_at,
        context=scrub(event.context),
        worker_id=event.worker_id,
        meta=scrub(event.meta),
        parent_execution_id=event.parent_execution_id,
        catalog_path=event.catalog_path,
    )
