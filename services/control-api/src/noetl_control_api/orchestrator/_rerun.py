"""Restart from a step: an earlier execution's recorded outcomes folded up to the restart point.

A rerun is a new execution of the same playbook version. It starts as any execution does,
but each command the orchestrator drafts for a step run the earlier execution completed
(same step, run number and loop iteration) is answered at once with that recorded outcome
instead of being issued, unless the step is the restart step or reachable from it (those
run again). With ``failed_iterations_only`` the restart step's completed iterations are
answered too, so a loop runs only the iterations that did not complete. What is left is
issued. Each reused outcome is recorded as a ``step.reused`` event of the new execution, so
its own log replays to its state: :func:`~._replay.replay` folds them first, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import msgspec
from noetl_common.templating import DEFAULT_LIMITS, TemplateLimits

from ..dsl import Playbook
from ._engine import apply_outcome, start_execution
from ._graph import graph_of
from ._state import Decision, ExecutionState
from ._types import CommandDraft, CommandOutcome, EventDraft

#: The event a rerun records for each outcome it reused instead of issuing a command.
STEP_REUSED = "step.reused"

RunKey = tuple[str, int, int | None]


class RecordedOutcome(msgspec.Struct, kw_only=True):
    """A completed command of the earlier execution: the step run it answered and its result.

    ``result`` and ``set`` are what the orchestrator reads (result-store references
    resolved); ``recorded`` is what the event held (references kept), for the new event."""

    step: str
    command_id: int
    run: int = 1
    iteration: int | None = None
    result: Any = None
    set: dict[str, Any] | None = None
    recorded: dict[str, Any] | None = None


class RerunPlan(msgspec.Struct, kw_only=True):
    """The new execution's start, and which steps it reuses and runs.

    ``decision``: the state after the fold, every event (``step.reused`` included) and the
    commands left to issue. ``outcomes``: the reused outcomes in the order they were folded
    (what a replay feeds back). ``reused`` / ``rerun``: step names in workflow order; a loop
    re-run with ``failed_iterations_only`` is in both."""

    decision: Decision
    outcomes: list[CommandOutcome]
    reused: list[str]
    rerun: list[str]


def run_key(meta: dict[str, Any]) -> RunKey:
    """The step run a command answers: (step, run number, loop iteration or None)."""
    iteration = meta.get("iteration")
    return (str(meta.get("step")), int(meta.get("run", 1)), iteration if isinstance(iteration, int) else None)


def rerun_steps(playbook: Playbook, from_step: str) -> set[str]:
    """The restart step and every step reachable from it: never reused."""
    graph = graph_of(playbook)
    return {from_step} | {s.name for s in playbook.steps if graph.reaches(from_step, s.name)}


def plan_rerun(
    playbook: Playbook,
    *,
    execution_id: int,
    payload: dict[str, Any],
    catalog_path: str,
    from_step: str,
    rerun_of: int,
    recorded: Iterable[RecordedOutcome],
    failed_iterations_only: bool = False,
    limits: TemplateLimits = DEFAULT_LIMITS,
) -> RerunPlan:
    """Start ``execution_id`` and fold the reusable ``recorded`` outcomes of ``rerun_of`` into it.

    Drafted commands are taken in the order they were drafted; each one whose step run has
    a reusable outcome is answered with it (its ``meta`` as drafted now), which may draft
    more. Each recorded outcome is used at most once, so the fold ends."""
    again = rerun_steps(playbook, from_step)
    available: dict[RunKey, RecordedOutcome] = {}
    for done in recorded:
        reusable_iteration = failed_iterations_only and done.step == from_step and done.iteration is not None
        if done.step not in again or reusable_iteration:
            available.setdefault((done.step, done.run, done.iteration), done)
    start = start_execution(
        playbook, execution_id=execution_id, payload=payload, catalog_path=catalog_path, limits=limits
    )
    state = start.state
    events = list(start.events)
    queue: deque[CommandDraft] = deque(start.commands)
    kept: list[CommandDraft] = []
    folded: list[CommandOutcome] = []
    while queue and state.status == "RUNNING":
        draft = queue.popleft()
        found = available.pop(run_key(draft.meta), None)
        if found is None:
            kept.append(draft)
            continue
        outcome = CommandOutcome(
            command_id=found.command_id,
            step=draft.step,
            status="completed",
            meta=draft.meta,
            result=found.result,
            set=found.set,
        )
        context = found.recorded if found.recorded is not None else {"result": found.result, "set": found.set}
        events.append(
            EventDraft(
                event_type=STEP_REUSED,
                step=draft.step,
                status="COMPLETED",
                context={
                    **context,
                    "reused_from": {"execution_id": rerun_of, "command_id": found.command_id},
                },
                meta={"command_id": found.command_id, "command_meta": draft.meta},
            )
        )
        decision = apply_outcome(playbook, state, outcome, owned=True, limits=limits)
        folded.append(outcome)
        state = decision.state
        events.extend(decision.events)
        queue.extend(decision.commands)
    live = _live_seqs(state)
    commands = [d for d in [*kept, *queue] if str(d.meta.get("seq")) in live]
    decision = Decision(
        state=state,
        events=events,
        commands=commands,
        status=state.status,
        result=state.result,
        error=state.error,
    )
    order = {s.name: i for i, s in enumerate(playbook.steps)}
    reused = sorted({o.step for o in folded}, key=order.__getitem__)
    return RerunPlan(
        decision=decision, outcomes=folded, reused=reused, rerun=_will_run(playbook, commands, order)
    )


def _live_seqs(state: ExecutionState) -> set[str]:
    """``meta.seq`` of every command the state still waits for."""
    live = set(state.in_flight)
    for loop in state.loops.values():
        live.update(loop.pending)
    return live


def _will_run(playbook: Playbook, commands: list[CommandDraft], order: dict[str, int]) -> list[str]:
    """The steps issued now and every step with a tool reachable from them, in workflow order."""
    graph = graph_of(playbook)
    issued = {c.step for c in commands}
    reachable = {
        s.name for s in playbook.steps if s.has_tool and any(graph.reaches(i, s.name) for i in issued)
    }
    return sorted(issued | reachable, key=order.__getitem__)
