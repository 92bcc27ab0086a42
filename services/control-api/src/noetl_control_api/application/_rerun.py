"""Restart an ended execution from a step (``POST /api/executions/{id}/rerun`` with ``from_step``).

The earlier execution's completed outcomes are read from its event log (``command.completed``
with the ``meta`` of its ``command.issued``, and the ``step.reused`` of an earlier rerun), then
:func:`~..orchestrator.plan_rerun` folds those of the steps before the restart point into a
new execution, which records each as a ``step.reused`` event and issues the rest in the same
transaction as any start (docs/decisions.md).
"""

from __future__ import annotations

from typing import Any

import msgspec
from noetl_common import Event
from noetl_common.results import ref_key
from noetl_common.templating import DEFAULT_LIMITS, TemplateLimits
from psycopg_pool import AsyncConnectionPool

from .. import store
from .._errors import Conflict, Forbidden, NotFound, PayloadTooLarge, Unprocessable
from ..orchestrator import STEP_REUSED, RecordedOutcome, plan_rerun, run_key
from ._outcomes import ReadOutcome
from ._playbooks import PlaybookCache
from ._policy import Policy, Principal, require
from ._recorder import ExecutionRef, Recorder
from ._results import MAX_REF_DEPTH, ResultService

#: Most completed outcomes a rerun reads from the earlier execution (a loop's iterations count
#: one each); an execution with more is refused rather than folded unbounded.
MAX_RECORDED_OUTCOMES = 100_000
_TERMINAL = ("playbook.completed", "playbook.failed", "playbook.cancelled")
_READ = ("command.issued", "command.completed", STEP_REUSED, *_TERMINAL)
_PAGE = 10_000
_PAGE_BYTES = 64 * 1024 * 1024


class RerunReply(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Which steps the rerun reuses and which run again; ``execution_id`` unless a dry run."""

    rerun_of: str
    from_step: str
    reused: list[str]
    rerun: list[str]
    execution_id: str | None = None


class _Recorded(msgspec.Struct, kw_only=True):
    """An outcome as the earlier execution's events hold it, before references are resolved."""

    command_id: int
    meta: dict[str, Any]
    context: dict[str, Any]


def _meta(event: Event) -> dict[str, Any]:
    return event.meta if isinstance(event.meta, dict) else {}


def _command_id(event: Event) -> int | None:
    raw = _meta(event).get("command_id")
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


async def _read_log(conn: Any, execution_id: int) -> list[_Recorded]:
    """The completed outcomes of ``execution_id``, in log order; 409 while its log lacks its end."""
    issued: dict[int, dict[str, Any]] = {}
    completed: list[tuple[int, dict[str, Any]]] = []
    found: list[_Recorded] = []
    ended, after = False, 0
    while True:
        page = await store.events.list_events(conn, execution_id, after, _PAGE, _PAGE_BYTES, _READ)
        if not page:
            break
        after = int(page[-1].event_id or 0)
        for event in page:
            context = event.context if isinstance(event.context, dict) else {}
            command_id = _command_id(event)
            if event.event_type in _TERMINAL:
                ended = True
            elif command_id is None:
                continue
            elif event.event_type == "command.issued":
                meta = _meta(event).get("command_meta")
                issued[command_id] = meta if isinstance(meta, dict) else {}
            elif event.event_type == "command.completed":
                completed.append((command_id, context))
            else:  # step.reused: an earlier rerun's outcome, its command meta on the event
                meta = _meta(event).get("command_meta")
                found.append(
                    _Recorded(
                        command_id=command_id, meta=meta if isinstance(meta, dict) else {}, context=context
                    )
                )
        if len(found) + len(completed) > MAX_RECORDED_OUTCOMES:
            raise Unprocessable(
                f"execution {execution_id} recorded over {MAX_RECORDED_OUTCOMES} outcomes: too many to rerun from"
            )
    if not ended:
        raise Conflict(
            f"execution {execution_id} has ended but its event log does not show its end: not projected"
            " yet (retry shortly), or its events were purged by retention (it cannot be rerun from a step)",
            retry_after=1.0,
        )
    found += [_Recorded(command_id=c, meta=issued.get(c, {}), context=ctx) for c, ctx in completed]
    return found


def _rekey(value: Any, execution_id: int, copies: dict[str, str], depth: int = 0) -> Any:
    """``value`` with each result-store reference moved under ``execution_id`` (same content
    hash), noting old key → new key in ``copies``; the same object when it holds none."""
    key = ref_key(value)
    if key is not None:
        new_key = f"{execution_id}/{key.partition('/')[2] or key}"
        copies[key] = new_key
        return {"$ref": {**value["$ref"], "key": new_key}}
    if depth >= MAX_REF_DEPTH or not isinstance(value, dict | list):
        return value
    items = list(value.items()) if isinstance(value, dict) else list(enumerate(value))
    changed = {k: new for k, v in items if (new := _rekey(v, execution_id, copies, depth + 1)) is not v}
    if not changed:
        return value
    if isinstance(value, dict):
        return {**value, **changed}
    return [changed.get(i, v) for i, v in enumerate(value)]


async def _recorded(
    conn: Any, log: list[_Recorded], new_id: int, copies: dict[str, str]
) -> tuple[list[RecordedOutcome], dict[int, tuple[Any, Any]]]:
    """The outcomes to fold (references resolved) and, by command id, the result and set the
    new events record: references moved under ``new_id`` (see :func:`_rekey`)."""
    recorded: list[RecordedOutcome] = []
    raw: dict[int, tuple[Any, Any]] = {}
    for item in log:
        if "step" not in item.meta:
            continue  # no command meta recorded: no step run it could answer
        step, run, iteration = run_key(item.meta)
        result, set_ = item.context.get("result"), item.context.get("set")
        resolved = await ResultService.resolve_refs(conn, result)
        resolved_set = await ResultService.resolve_refs(conn, set_) if isinstance(set_, dict) else None
        result, set_ = _rekey(result, new_id, copies), _rekey(set_, new_id, copies)
        raw[item.command_id] = (result, set_)
        recorded.append(
            RecordedOutcome(
                step=step,
                command_id=item.command_id,
                run=run,
                iteration=iteration,
                result=resolved,
                set=resolved_set,
                recorded={"result": result, "set": set_},
            )
        )
    return recorded, raw


class RerunService:
    """Plans and starts reruns from a step."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        playbooks: PlaybookCache,
        recorder: Recorder,
        policy: Policy,
        *,
        payload_max_bytes: int,
        template_limits: TemplateLimits = DEFAULT_LIMITS,
    ) -> None:
        self._pool = pool
        self._playbooks = playbooks
        self._recorder = recorder
        self._policy = policy
        self._payload_max = payload_max_bytes
        self._limits = template_limits

    async def rerun_from(
        self,
        execution_id: int,
        from_step: str,
        overlay: dict[str, Any],
        *,
        dry_run: bool,
        failed_iterations_only: bool,
        principal: Principal,
    ) -> RerunReply:
        """Plan the rerun of ``execution_id`` from ``from_step`` and, unless ``dry_run``, start it."""
        if principal.is_worker:
            raise Forbidden(f"{principal.describe()} may not rerun an execution")
        async with self._pool.connection() as conn:
            row = await store.executions.get(conn, execution_id)
            if row is None:
                raise NotFound(f"execution {execution_id} not found")
            require(self._policy, principal, "execution.start", row.path)
            if row.status == "RUNNING":
                raise Conflict(f"execution {execution_id} is still running: cancel it or let it end first")
            entry = await store.catalog.get(conn, row.path, row.version)
            assert entry is not None  # the foreign key guarantees it
            playbook = self._playbooks.get(entry.path, entry.version, entry.content)
            if not playbook.has_step(from_step):
                raise Unprocessable(
                    f"from_step {from_step[:200]!r} is no step of {row.path} version {row.version}",
                    {"field": "from_step"},
                )
            if failed_iterations_only and playbook.step(from_step).loop is None:
                raise Unprocessable(
                    f"failed_iterations_only: step {from_step!r} is not a loop",
                    {"field": "failed_iterations_only"},
                )
            new_id = self._recorder.ids.next_id()
            copies: dict[str, str] = {}
            recorded, raw = await _recorded(conn, await _read_log(conn, execution_id), new_id, copies)
        payload = {**(row.payload or {}), **overlay}
        size = len(msgspec.json.encode(payload))
        if size > self._payload_max:
            raise PayloadTooLarge(
                f"the payload is {size} bytes, over NOETL_EXECUTE_PAYLOAD_MAX_BYTES={self._payload_max}",
                {"field": "workload", "limit": self._payload_max},
            )
        plan = plan_rerun(
            playbook,
            execution_id=new_id,
            payload=payload,
            catalog_path=entry.path,
            from_step=from_step,
            rerun_of=execution_id,
            recorded=recorded,
            failed_iterations_only=failed_iterations_only,
            limits=self._limits,
        )
        reply = RerunReply(
            rerun_of=str(execution_id), from_step=from_step, reused=plan.reused, rerun=plan.rerun
        )
        if dry_run:
            return reply
        for outcome in plan.outcomes:  # events keep result-store references, as the ingest's do
            reference, raw_set = raw[outcome.command_id]
            ReadOutcome(outcome=outcome, reference=reference, raw_set=raw_set).keep_references(
                plan.decision.events
            )
        ref = ExecutionRef(execution_id=new_id, catalog_path=entry.path)
        for draft in plan.decision.events:
            # 413 now: the recorder would fail the start instead and drop its step.reused
            # events with the rest, leaving a log that cannot replay the reused outcomes
            self._recorder.event_row(self._recorder.from_draft(ref, draft))
        requested = self._recorder.new_event(
            ref,
            "playbook.execution_requested",
            status="RUNNING",
            context={
                "path": entry.path,
                "version": entry.version,
                "payload": payload,
                "rerun_of": execution_id,
                "from_step": from_step,
                "failed_iterations_only": failed_iterations_only,
            },
        )
        async with self._pool.connection() as conn, conn.pipeline(), conn.transaction():
            await self._recorder.write_decision(
                conn,
                ref,
                plan.decision,
                leading=[requested],
                insert_execution={
                    "version": entry.version,
                    "payload": payload,
                    "timeout": playbook.timeout,
                    "rerun_of": execution_id,
                },
            )
            await store.results.copy(conn, copies, new_id)
        return msgspec.structs.replace(reply, execution_id=str(new_id))
