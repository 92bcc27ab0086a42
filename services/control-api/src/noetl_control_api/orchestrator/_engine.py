"""The orchestrator's calls: (playbook, state, incoming event) → new state, events, commands.

No I/O. Each call copies the state it is given (unless told it owns it), so a caller that
discards the decision (a rolled-back transaction) still holds the old state untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from noetl_common.templating import DEFAULT_LIMITS, TemplateLimits

from ..dsl import Playbook
from ._failure import StepFailure
from ._run import Run, live_steps
from ._state import Decision, ExecutionState
from ._types import CommandOutcome, EventDraft


def _copy(state: ExecutionState) -> ExecutionState:
    """A deep copy through JSON (the state's own format), far faster than copy.deepcopy."""
    return msgspec.json.decode(msgspec.json.encode(state), type=ExecutionState)


def _working_copy(playbook: Playbook, state: ExecutionState, limits: TemplateLimits) -> Run | Decision:
    """A run over a copy of ``state``, or a FAILED decision if the state cannot be copied."""
    try:
        return Run(playbook, _copy(state), limits)
    except Exception as exc:
        failed = msgspec.structs.replace(
            state, status="FAILED", error=f"orchestrator error: state is not JSON data: {exc}"
        )
        event = EventDraft(event_type="playbook.failed", status="FAILED", context={"error": failed.error})
        return Decision(state=failed, events=[event], commands=[], status="FAILED", error=failed.error)


def _guarded(run: Run, action: Callable[[], Any]) -> Decision:
    try:
        action()
        run.drain()
        run.finish_if_idle()
    except StepFailure as exc:
        run.fail(exc.step, exc.message)
    except Exception as exc:  # the store must always get a decision, never a traceback
        run.fail(None, f"orchestrator error: {type(exc).__name__}: {exc}")
    return run.decision()


def start_execution(
    playbook: Playbook,
    *,
    execution_id: int,
    payload: dict[str, Any],
    catalog_path: str,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> Decision:
    """Begin an execution: merge ``payload`` over the workload and enter the entry step.

    ``limits``: the budget of each template the decision renders (each field of a step).
    """
    if not isinstance(payload, dict):
        payload = {}
        error = "the execute payload must be a JSON object"
    else:
        error = None
    workload = {**playbook.workload, **payload}
    state = ExecutionState(execution_id=execution_id, catalog_path=catalog_path, workload=workload)
    run = Run(playbook, state, limits)
    if error is not None:
        run.fail(None, error)
        return run.decision()
    run.emit(
        "playbook.started", status="RUNNING", name=playbook.name, catalog_path=catalog_path, workload=workload
    )
    return _guarded(run, lambda: run.enqueue(playbook.entry_step, {}))


def apply_outcome(
    playbook: Playbook,
    state: ExecutionState,
    outcome: CommandOutcome,
    *,
    owned: bool = False,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> Decision:
    """Advance on a command's terminal report; duplicates and reports after the end are no-ops.

    ``owned``: the caller hands over a state nobody else holds (just decoded from the store,
    or a replay's previous step), so it is worked on in place instead of copied first; a
    large loop's state is copied 1,000 times otherwise.
    """
    run = Run(playbook, state, limits) if owned else _working_copy(playbook, state, limits)
    if isinstance(run, Decision) or run.state.status != "RUNNING":
        return run if isinstance(run, Decision) else run.decision()
    return _guarded(run, lambda: run.on_outcome(outcome))


def cancel_execution(playbook: Playbook, state: ExecutionState, reason: str) -> Decision:
    """Cancel on request: no new commands; in-flight ones are abandoned (the store cancels them)."""
    run = _working_copy(playbook, state, DEFAULT_LIMITS)  # renders nothing
    if isinstance(run, Decision):
        return run
    current = run.state
    if current.status != "RUNNING":
        return run.decision()
    abandoned = sorted(live_steps(current))
    current.status = "CANCELLED"
    current.error = reason
    current.in_flight, current.joins, current.loops = {}, {}, {}
    run.emit("playbook.cancelled", status="CANCELLED", reason=reason, abandoned_steps=abandoned)
    return run.decision()


def fail_execution(state: ExecutionState, error: str, *, cause: str, step: str | None = None) -> Decision:
    """Fail on the control plane's word, not a step's: a decision whose events are too large
    to record, an event that can never be published. Applies whatever status ``state``
    reached (the caller decides whether the execution may still be failed): the decision
    that led there is dropped, so its result goes too. ``playbook.failed`` carries ``cause``,
    which tells a replay to apply the same failure (the orchestrator alone cannot reach it).
    """
    abandoned = sorted(live_steps(state))
    # fields are replaced, never changed in place: a shallow copy leaves ``state`` intact
    current = msgspec.structs.replace(
        state, status="FAILED", error=error, result=None, in_flight={}, joins={}, loops={}
    )
    event = EventDraft(
        event_type="playbook.failed",
        step=step,
        status="FAILED",
        context={"error": error, "abandoned_steps": abandoned, "cause": cause},
    )
    return Decision(state=current, events=[event], commands=[], status="FAILED", error=error)
