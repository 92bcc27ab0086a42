"""Restart from a step, in the pure orchestrator: the fold of an earlier execution's recorded
outcomes, which steps it reuses and which it runs again, and that the new execution's own
outcomes (reused ones first) replay to its state."""

from __future__ import annotations

import textwrap
from collections import deque
from typing import Any

import msgspec
from noetl_common import TaskError
from noetl_control_api.dsl import Playbook, parse_playbook
from noetl_control_api.orchestrator import (
    STEP_REUSED,
    CommandDraft,
    CommandOutcome,
    Decision,
    RecordedOutcome,
    apply_outcome,
    plan_rerun,
    replay,
    start_execution,
)

HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t, path: tests/rerun}\n"
OLD, NEW = 100, 200

CHAIN = """
workload: {broken: true}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'n': 1}"}
    next: [{step: second, args: {n: "{{ start.n }}"}}]
  - step: second
    tool: {kind: python, code: "result = {'n': 2}"}
    set: {ctx.seen: "{{ second.n }}"}
    next: [{step: third}]
  - step: third
    tool: {kind: python, code: "result = {'n': 3}"}
    next: [{step: end}]
  - step: end
    tool: {kind: python, code: "result = {'done': True}"}
"""

LOOP = """
workload: {xs: [10, 20, 30, 40, 50]}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'ok': True}"}
    next: [{step: fetch}]
  - step: fetch
    loop: {in: "{{ xs }}", iterator: x, spec: {mode: MODE}}
    tool: {kind: python, code: "result = x"}
    next: [{step: end}]
  - step: end
    tool: {kind: python, code: "result = {'done': True}"}
"""


def inline(body: str) -> Playbook:
    return parse_playbook(HEADER + textwrap.dedent(body))


def answer(command: CommandDraft, *, fail: bool = False) -> CommandOutcome:
    """A worker's report: an iteration returns its index times ten plus one, a step its name and seq."""
    iteration = command.meta.get("iteration")
    if fail:
        return CommandOutcome(
            command_id=command.meta["seq"],
            step=command.step,
            meta=command.meta,
            status="failed",
            error=TaskError(message="boom"),
        )
    result = {"step": command.step, "n": command.meta["seq"]} if iteration is None else iteration * 10 + 1
    return CommandOutcome(
        command_id=command.meta["seq"],
        step=command.step,
        meta=command.meta,
        status="completed",
        result=result,
    )


def run(
    pb: Playbook,
    first: Decision,
    fails: set[tuple[str, int | None]] = frozenset(),  # type: ignore[assignment]
) -> tuple[Decision, list[CommandOutcome], list[CommandDraft]]:
    """Drive an execution from ``first`` to its end, failing the (step, iteration)s in ``fails``."""
    decision, outcomes, issued = first, [], list(first.commands)
    queue = deque(first.commands)
    while queue and decision.status == "RUNNING":
        command = queue.popleft()
        outcome = answer(command, fail=(command.step, command.meta.get("iteration")) in fails)
        outcomes.append(outcome)
        decision = apply_outcome(pb, decision.state, outcome)
        queue.extend(decision.commands)
        issued.extend(decision.commands)
    return decision, outcomes, issued


def recorded(outcomes: list[CommandOutcome]) -> list[RecordedOutcome]:
    """What the application reads from the earlier execution's events: its completed outcomes."""
    return [
        RecordedOutcome(
            step=o.step,
            command_id=o.command_id,
            run=o.meta.get("run", 1),
            iteration=o.meta.get("iteration"),
            result=o.result,
            set=o.set,
        )
        for o in outcomes
        if o.status == "completed"
    ]


def old_run(
    pb: Playbook, payload: dict[str, Any], fails: set[tuple[str, int | None]]
) -> list[RecordedOutcome]:
    first = start_execution(pb, execution_id=OLD, payload=payload, catalog_path=pb.path)
    final, outcomes, _ = run(pb, first, fails)
    assert final.status == "FAILED"
    return recorded(outcomes)


def plan(pb: Playbook, step: str, outcomes: list[RecordedOutcome], **options: Any) -> Any:
    return plan_rerun(
        pb,
        execution_id=NEW,
        payload={},
        catalog_path=pb.path,
        from_step=step,
        rerun_of=OLD,
        recorded=outcomes,
        **options,
    )


def assert_replays(
    pb: Playbook, reused: list[CommandOutcome], later: list[CommandOutcome], final: Decision
) -> None:
    """The new execution's outcomes, reused ones first, rebuild its final state."""
    state = replay(pb, execution_id=NEW, payload={}, catalog_path=pb.path, outcomes=[*reused, *later])
    assert msgspec.to_builtins(state) == msgspec.to_builtins(final.state)


def test_steps_before_the_restart_point_are_reused_and_only_the_rest_is_issued() -> None:
    pb = inline(CHAIN)
    earlier = old_run(pb, {}, {("third", None)})
    assert [o.step for o in earlier] == ["start", "second"]

    new = plan(pb, "third", earlier)

    assert new.reused == ["start", "second"] and new.rerun == ["third", "end"]
    assert [c.step for c in new.decision.commands] == ["third"]
    reused_events = [e for e in new.decision.events if e.event_type == STEP_REUSED]
    assert [e.step for e in reused_events] == ["start", "second"]
    assert reused_events[0].context == {
        "result": {"step": "start", "n": 1},
        "set": None,
        "reused_from": {"execution_id": OLD, "command_id": 1},
    }
    assert new.decision.state.results == {
        "start": {"step": "start", "n": 1},
        "second": {"step": "second", "n": 2},
    }
    assert new.decision.state.ctx == {"seen": 2}  # second's set, rendered from the reused result
    final, later, issued = run(pb, new.decision)
    assert final.status == "COMPLETED"
    assert [c.step for c in issued] == ["third", "end"]  # start and second never issued again
    assert_replays(pb, new.outcomes, later, final)


def test_the_restart_step_and_everything_after_it_run_again_even_if_recorded() -> None:
    pb = inline(CHAIN)
    first = start_execution(pb, execution_id=OLD, payload={}, catalog_path=pb.path)
    done, outcomes, _ = run(pb, first)
    assert done.status == "COMPLETED"

    new = plan(pb, "second", recorded(outcomes))

    assert new.reused == ["start"] and new.rerun == ["second", "third", "end"]
    assert [c.step for c in new.decision.commands] == ["second"]
    # the reused result reaches the restart step's args as it did in the first run
    assert new.decision.commands[0].spec.args == {"n": 1}


def test_restarting_from_the_entry_step_reuses_nothing() -> None:
    pb = inline(CHAIN)
    new = plan(pb, "start", old_run(pb, {}, {("third", None)}))
    assert new.reused == [] and new.outcomes == []
    assert [c.step for c in new.decision.commands] == ["start"]
    assert not [e for e in new.decision.events if e.event_type == STEP_REUSED]


def test_a_step_the_earlier_run_never_completed_is_issued_though_before_the_restart_point() -> None:
    pb = inline(CHAIN)
    earlier = [o for o in old_run(pb, {}, {("third", None)}) if o.step != "second"]
    new = plan(pb, "third", earlier)
    assert new.reused == ["start"] and new.rerun == ["second", "third", "end"]
    assert [c.step for c in new.decision.commands] == ["second"]


def test_failed_iterations_only_issues_just_the_iterations_that_did_not_complete() -> None:
    pb = inline(LOOP.replace("MODE", "parallel"))
    first = start_execution(pb, execution_id=OLD, payload={}, catalog_path=pb.path)
    # iterations 0, 2 and 4 complete, 1 fails (which fails the run), 3 never reports
    outcomes = [answer(c) for c in first.commands]  # start
    decision = apply_outcome(pb, first.state, outcomes[0])
    loop = {c.meta["iteration"]: c for c in decision.commands}
    for index in (0, 2, 4):
        outcomes.append(answer(loop[index]))
        decision = apply_outcome(pb, decision.state, outcomes[-1])
    decision = apply_outcome(pb, decision.state, answer(loop[1], fail=True))
    assert decision.status == "FAILED"

    new = plan(pb, "fetch", recorded(outcomes), failed_iterations_only=True)

    assert [(c.step, c.meta["iteration"]) for c in new.decision.commands] == [("fetch", 1), ("fetch", 3)]
    assert new.reused == ["start", "fetch"] and new.rerun == ["fetch", "end"]
    assert [
        e.meta["command_meta"].get("iteration") for e in new.decision.events if e.event_type == STEP_REUSED
    ] == [
        None,
        0,
        2,
        4,
    ]
    final, later, issued = run(pb, new.decision)
    assert final.status == "COMPLETED"
    assert [(c.step, c.meta.get("iteration")) for c in issued] == [("fetch", 1), ("fetch", 3), ("end", None)]
    assert final.state.results["fetch"] == {"results": [1, 11, 21, 31, 41]}  # input order, reused and new
    assert_replays(pb, new.outcomes, later, final)

    whole = plan(pb, "fetch", recorded(outcomes))  # without the flag the whole loop runs again
    assert [c.meta["iteration"] for c in whole.decision.commands] == [0, 1, 2, 3, 4]
    assert whole.reused == ["start"]


def test_a_sequential_loop_resumes_at_its_first_iteration_that_did_not_complete() -> None:
    pb = inline(LOOP.replace("MODE", "sequential"))
    earlier = old_run(pb, {}, {("fetch", 2)})
    assert [o.iteration for o in earlier if o.step == "fetch"] == [0, 1]

    new = plan(pb, "fetch", earlier, failed_iterations_only=True)

    assert [(c.step, c.meta["iteration"]) for c in new.decision.commands] == [("fetch", 2)]
    final, later, issued = run(pb, new.decision)
    assert [c.meta.get("iteration") for c in issued] == [2, 3, 4, None]
    assert final.state.results["fetch"] == {"results": [1, 11, 21, 31, 41]}
    assert_replays(pb, new.outcomes, later, final)


def test_a_rerun_whose_fold_ends_the_run_issues_nothing() -> None:
    """Restarting from a step routing never reaches again: every step is reused, the run completes."""
    pb = inline(
        """
        workflow:
          - step: start
            tool: {kind: python, code: "result = 1"}
            next: [{step: finish, when: "{{ start.step == 'start' }}"}, {step: side}]
          - step: side
            tool: {kind: python, code: "result = 2"}
          - step: finish
            tool: {kind: python, code: "result = 3"}
        """
    )
    first = start_execution(pb, execution_id=OLD, payload={}, catalog_path=pb.path)
    done, outcomes, _ = run(pb, first)
    assert done.status == "COMPLETED"
    new = plan(pb, "side", recorded(outcomes))
    assert new.decision.status == "COMPLETED" and new.decision.commands == []
    assert new.reused == ["start", "finish"] and new.rerun == []
    assert_replays(pb, new.outcomes, [], new.decision)
