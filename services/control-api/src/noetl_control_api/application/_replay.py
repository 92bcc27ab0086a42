"""Replay: rebuild an execution's state from its event log and compare it with the stored state.

The log is the read model ``noetl.event`` (what the projector wrote). The inputs the
orchestrator needs are all in it: the payload (``playbook.execution_requested``), each
command's ``meta`` (``meta.command_meta`` of its ``command.issued`` event), every
terminal outcome (``command.completed`` / ``command.failed``, in the order the ingest
applied them — ``meta.applied_id`` — a result-store reference resolved as the ingest
resolves it), a cancellation's reason
(``playbook.cancelled``), a failure the control plane imposed (``playbook.failed`` with a
``cause``: a decision too large to record, an event that could not be published) and, in a
rerun from a step, the outcomes it reused (``step.reused``, each with its command meta, all
applied at its start, before any command's). Folding them through :func:`~..orchestrator.replay` gives a
state that must equal ``noetl.execution.state`` field by field.
"""

from __future__ import annotations

from typing import Any

import msgspec
from noetl_common import Event, TaskError
from noetl_common.templating import DEFAULT_LIMITS, TemplateLimits

from .. import store
from .._errors import NotFound
from ..orchestrator import STEP_REUSED, CommandOutcome, ImposedFailure, replay, state_from_json
from ._playbooks import PlaybookCache
from ._results import ResultService

#: The state fields compared; together they are everything the orchestrator decides from.
COMPARED = (
    "status",
    "workload",
    "ctx",
    "results",
    "runs",
    "in_flight",
    "joins",
    "loops",
    "seq",
    "last_step",
    "result",
    "error",
)
_TERMINAL_STATUS = {
    "playbook.completed": "COMPLETED",
    "playbook.failed": "FAILED",
    "playbook.cancelled": "CANCELLED",
}
_PAGE = 10000
_PAGE_BYTES = 64 * 1024 * 1024  # replay holds every event anyway; pages only bound one round trip


class ReplayReply(msgspec.Struct, kw_only=True):
    """``GET /api/executions/{id}/replay``: the rebuilt state and where it differs."""

    execution_id: int
    stored_status: str
    #: False while the log lacks events the stored state already reflects (projection lag)
    log_complete: bool
    events: int
    outcomes: int
    matches: bool
    differences: dict[str, dict[str, Any]]
    replayed: dict[str, Any]


def _command_id(event: Event) -> int | None:
    meta = event.meta if isinstance(event.meta, dict) else {}
    raw = meta.get("command_id")
    if raw is None and isinstance(event.context, dict):
        raw = event.context.get("command_id")
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def _applied_order(event: Event) -> int:
    meta = event.meta if isinstance(event.meta, dict) else {}
    applied = meta.get("applied_id")
    return int(applied) if isinstance(applied, int) else int(event.event_id or 0)


async def replay_execution(
    conn: Any, playbooks: PlaybookCache, execution_id: int, limits: TemplateLimits = DEFAULT_LIMITS
) -> ReplayReply:
    """Rebuild ``execution_id``'s state from ``noetl.event`` and diff it with the stored one."""
    row = await store.executions.get(conn, execution_id)
    if row is None:
        raise NotFound(f"execution {execution_id} not found")
    events: list[Event] = []
    after = 0
    while True:
        page = await store.events.list_events(conn, execution_id, after, _PAGE, _PAGE_BYTES)
        events.extend(page)
        if not page:  # a page may end early at its byte budget: only an empty one is the end
            break
        after = int(page[-1].event_id or 0)
    entry = await store.catalog.get(conn, row.path, row.version)
    assert entry is not None  # the foreign key guarantees it
    playbook = playbooks.get(entry.path, entry.version, entry.content)

    payload: dict[str, Any] = {}
    issued_meta: dict[int, dict[str, Any]] = {}
    terminal: list[Event] = []
    reused: list[Event] = []
    cancel_reason: str | None = None
    failure: ImposedFailure | None = None
    log_status = "RUNNING"
    ended_at = 2**63  # the id of the playbook's terminal event, once seen
    for event in events:
        kind = event.event_type
        context = event.context if isinstance(event.context, dict) else {}
        if kind == "playbook.execution_requested":
            payload = dict(context.get("payload") or {})
        elif kind == "command.issued":
            command_id = _command_id(event)
            meta = (event.meta if isinstance(event.meta, dict) else {}).get("command_meta")
            if command_id is not None and isinstance(meta, dict):
                issued_meta[command_id] = meta
        elif kind in ("command.completed", "command.failed"):
            terminal.append(event)
        elif kind == STEP_REUSED:
            reused.append(event)
        elif kind in _TERMINAL_STATUS and log_status == "RUNNING":
            log_status = _TERMINAL_STATUS[kind]
            ended_at = int(event.event_id or 0)
            if kind == "playbook.cancelled":
                cancel_reason = str(context.get("reason") or "")
            elif kind == "playbook.failed" and context.get("cause"):
                failure = ImposedFailure(
                    error=str(context.get("error") or ""), cause=str(context["cause"]), step=event.step
                )

    # the order the ingest applied them in (meta.applied_id, minted under the execution
    # lock); events recorded before that stamp existed fall back to their event id
    # outcomes that arrived after the playbook ended changed nothing (the ingest ignores them)
    terminal = sorted((e for e in terminal if _applied_order(e) < ended_at), key=_applied_order)
    outcomes: list[CommandOutcome] = []
    for event in [*reused, *terminal]:
        command_id = _command_id(event)
        if command_id is None:
            continue
        context = event.context if isinstance(event.context, dict) else {}
        failed = event.event_type == "command.failed"
        error = context.get("error")
        raw_set = context.get("set")
        meta = event.meta if isinstance(event.meta, dict) else {}
        command_meta = meta.get("command_meta") if event.event_type == STEP_REUSED else None
        outcomes.append(
            CommandOutcome(
                command_id=command_id,
                step=event.step or "",
                status="failed" if failed else "completed",
                meta=command_meta if isinstance(command_meta, dict) else issued_meta.get(command_id, {}),
                result=await ResultService.resolve_refs(conn, context.get("result")),
                error=TaskError.parse(error) if failed and error is not None else None,
                set=await ResultService.resolve_refs(conn, raw_set) if isinstance(raw_set, dict) else None,
            )
        )
    state = replay(
        playbook,
        execution_id=execution_id,
        payload=payload,
        catalog_path=row.path,
        outcomes=outcomes,
        cancel_reason=cancel_reason,
        failure=failure,
        limits=limits,
    )
    rebuilt = msgspec.to_builtins(state)
    stored = msgspec.to_builtins(state_from_json(row.state)) if row.state is not None else {}
    differences = {
        name: {"stored": stored.get(name), "replayed": rebuilt.get(name)}
        for name in COMPARED
        if stored.get(name) != rebuilt.get(name)
    }
    return ReplayReply(
        execution_id=execution_id,
        stored_status=row.status,
        log_complete=log_status == row.status,
        events=len(events),
        outcomes=len(outcomes),
        matches=not differences,
        differences=differences,
        replayed=rebuilt,
    )
