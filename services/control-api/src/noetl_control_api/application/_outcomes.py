"""A terminal worker event as the orchestrator reads it: result-store references resolved
for the templates, and put back in the events it records."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from noetl_common import Event, TaskError
from noetl_common.arrow_limits import ArrowLimits

from ..orchestrator import CommandOutcome, EventDraft
from ..store import CommandRow, NewCommand
from ._results import ResultService


@dataclass
class ReadOutcome:
    """The outcome handed to the orchestrator, and the ``result`` and ``set`` as the worker sent them."""

    outcome: CommandOutcome
    reference: Any
    raw_set: Any

    def keep_references(self, drafts: list[EventDraft]) -> None:
        """Record the references, not the data they were resolved to (see :func:`_keep_references`)."""
        resolved, set_ = self.outcome.result, self.outcome.set
        if resolved is not self.reference or set_ is not self.raw_set:
            _keep_references(drafts, self.reference, resolved, self.raw_set, set_)


async def read_outcome(
    conn: Any, event: Event, command: CommandRow, status: Literal["completed", "failed"], arrow: ArrowLimits
) -> ReadOutcome:
    """The orchestrator's view of a terminal event of ``command``: ``result`` and ``set`` values
    stored in the result store are resolved (templates read the data), ``context.error`` is
    read as a :class:`TaskError`."""
    context = event.context or {}
    error = context.get("error")
    raw_set = context.get("set")
    set_ = await ResultService.resolve_refs(conn, raw_set, arrow) if isinstance(raw_set, dict) else None
    reference = context.get("result")
    resolved = await ResultService.resolve_refs(conn, reference, arrow)
    outcome = CommandOutcome(
        command_id=command.command_id,
        step=command.step,
        status=status,
        meta=command.meta or {},
        # a result offloaded to the result store arrives as a reference: templates read the data
        result=resolved,
        error=TaskError.parse(error) if status == "failed" and error is not None else None,
        set=set_,
    )
    return ReadOutcome(outcome=outcome, reference=reference, raw_set=raw_set)


def _keep_references(
    drafts: list[EventDraft], reference: Any, resolved: Any, raw_set: Any, resolved_set: Any
) -> None:
    """Events keep the small result-store references, not the data they stand for:
    ``playbook.completed`` (the last result) and the ``ctx.patched`` of the worker's ``set``."""
    for draft in drafts:
        context = draft.context
        if not context:
            continue
        if resolved is not reference and context.get("result") == resolved:
            draft.context = {**context, "result": reference}
        elif (
            draft.event_type == "ctx.patched"
            and context.get("source") == "rules"
            and isinstance(context.get("set"), dict)
            and isinstance(raw_set, dict)
            and isinstance(resolved_set, dict)
        ):
            patched = {
                key: raw_set[key] if key in raw_set and value == resolved_set.get(key) else value
                for key, value in context["set"].items()
            }
            draft.context = {**context, "set": patched}


def claimed_row(command: NewCommand) -> CommandRow:
    """The row of a command inserted claimed (see :meth:`Recorder.stage_claim`)."""
    return CommandRow(
        command_id=command.command_id,
        event_id=command.event_id,
        execution_id=command.execution_id,
        step=command.step,
        pool=command.pool,
        tool_kind=command.tool_kind,
        spec=command.spec,
        meta=command.meta,
        status="CLAIMED",
        attempt=1,
        worker_id=command.worker_id,
        lease_expires_at=None,
        started_at=None,
        claimed_by=command.claimed_by,
    )
