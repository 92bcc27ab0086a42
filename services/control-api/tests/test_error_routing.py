"""Arcs evaluated after a failed call (current form), with ``event`` and ``error`` in scope, as
upstream routes errors to recovery steps; the earlier form keeps "a failed step fires no arcs".
Pure orchestrator, driven by an in-test worker; every run is replayed to the same state."""

from __future__ import annotations

import textwrap
from collections import deque
from collections.abc import Callable
from typing import Any

import msgspec
from noetl_common import TaskError
from noetl_control_api.dsl import Playbook, parse_playbook
from noetl_control_api.orchestrator import (
    CommandDraft,
    CommandOutcome,
    Decision,
    EventDraft,
    apply_outcome,
    replay,
    start_execution,
    state_decode,
    state_encode,
)

HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t, path: tests/t}\n"
HTTP_503 = TaskError(
    message="HTTP 503 from GET http://x", kind="HttpStatusError", category="tool_error", retryable=True, code="HTTP_503"
)


def pb(body: str) -> Playbook:
    return parse_playbook(HEADER + textwrap.dedent(body))


def drive(
    playbook: Playbook, worker: Callable[[CommandDraft], CommandOutcome]
) -> tuple[Decision, list[EventDraft], list[CommandDraft]]:
    """Run to the end; returns the final decision, every event and every command, and checks that
    replaying the outcomes gives the same state back."""
    decision = start_execution(playbook, execution_id=1, payload={}, catalog_path=playbook.path)
    events, commands, outcomes = list(decision.events), list(decision.commands), []
    queue = deque(decision.commands)
    state = decision.state
    while queue:
        reported = worker(queue.popleft())
        outcomes.append(reported)
        decision = apply_outcome(playbook, state_decode(state_encode(state)), reported)
        state = decision.state
        events += decision.events
        commands += decision.commands
        queue.extend(decision.commands)
    replayed = replay(playbook, execution_id=1, payload={}, catalog_path=playbook.path, outcomes=outcomes)
    assert msgspec.to_builtins(replayed) == msgspec.to_builtins(decision.state)
    return decision, events, commands


def worker(fail: dict[str, TaskError], results: dict[str, Any] | None = None) -> Callable[[CommandDraft], CommandOutcome]:
    def run(command: CommandDraft) -> CommandOutcome:
        if command.step in fail:
            return CommandOutcome(
                command_id=1, step=command.step, meta=command.meta, status="failed", error=fail[command.step]
            )
        value = (results or {}).get(command.step, {"step": command.step, "args": command.spec.args})
        return CommandOutcome(command_id=1, step=command.step, meta=command.meta, status="completed", result=value)

    return run


RECOVERY = """
workflow:
  - step: start
    tool: {kind: http, url: "http://x"}
    next:
      spec: {mode: exclusive}
      arcs:
        - step: recover
          when: "{{ event.name == 'call.error' and error.retryable }}"
          args: {kind: "{{ error.kind }}", code: "{{ error.code }}", seen: "{{ start.status }}"}
          set: {ctx.last_error: "{{ output.error.code }}"}
        - step: done
          when: "{{ event.name == 'call.done' }}"
  - step: recover
    tool: {kind: python, code: "result = 1"}
    next: {spec: {mode: exclusive}, arcs: [{step: end}]}
  - step: done
    tool: {kind: python, code: "result = 2"}
  - step: end
"""


def test_a_failed_call_routes_to_the_recovery_arc_with_event_and_error_in_scope() -> None:
    final, events, commands = drive(pb(RECOVERY), worker({"start": HTTP_503}))

    assert [c.step for c in commands] == ["start", "recover"]
    assert commands[1].spec.args == {"kind": "tool_error", "code": "HTTP_503", "seen": "error"}
    assert final.state.ctx == {"last_error": "HTTP_503"}
    error = final.state.results["start"]["error"]
    assert final.state.results["start"]["status"] == "error"
    assert (error["kind"], error["retryable"], error["code"]) == ("tool_error", True, "HTTP_503")
    routed = [e for e in events if e.event_type == "next.evaluated" and e.step == "start"]
    assert routed[0].context == {"mode": "exclusive", "fired": ["recover"], "implicit": False, "after": "call.error"}
    # the recovery ran to its end, and the execution still reports the error (as upstream's does)
    assert final.status == "FAILED" and final.error is not None
    assert final.error.startswith("step 'start' failed: HttpStatusError: HTTP 503")
    assert events[-1].event_type == "playbook.failed" and events[-1].step == "start"
    assert "end" in final.state.runs


def test_no_arc_holding_after_a_failure_fails_the_run_as_before() -> None:
    not_retryable = TaskError(message="bad", kind="KeyError", category="tool_error", retryable=False)

    final, events, commands = drive(pb(RECOVERY), worker({"start": not_retryable}))

    assert [c.step for c in commands] == ["start"]
    assert final.status == "FAILED" and final.error == "step 'start' failed: KeyError: bad"
    assert "start" not in final.state.results and final.state.failure is None
    assert not [e for e in events if e.event_type == "next.evaluated"]


def test_the_success_path_sees_event_call_done_and_output_data() -> None:
    final, _, commands = drive(pb(RECOVERY), worker({}))

    assert [c.step for c in commands] == ["start", "done"]
    assert final.status == "COMPLETED"


def test_an_arc_without_a_condition_fires_after_a_failure_too() -> None:
    playbook = pb(
        """
        workflow:
          - step: start
            tool: {kind: python, code: "raise ValueError()"}
            next: {spec: {mode: exclusive}, arcs: [{step: cleanup}]}
          - step: cleanup
            tool: {kind: python, code: "result = 1"}
        """
    )

    final, _, commands = drive(playbook, worker({"start": TaskError(message="boom", category="tool_error")}))

    assert [c.step for c in commands] == ["start", "cleanup"]
    assert final.status == "FAILED" and final.error == "step 'start' failed: boom"


def test_the_earlier_list_form_fires_no_arc_after_a_failure() -> None:
    playbook = pb(
        """
        workflow:
          - step: start
            tool: {kind: python, code: "raise ValueError()"}
            next: [{step: cleanup}]
          - step: cleanup
            tool: {kind: python, code: "result = 1"}
        """
    )

    final, _, commands = drive(playbook, worker({"start": HTTP_503}))

    assert [c.step for c in commands] == ["start"] and final.status == "FAILED"


def test_a_recovery_in_one_branch_waits_for_the_other_branch_before_failing() -> None:
    playbook = pb(
        """
        workflow:
          - step: start
            next: {spec: {mode: inclusive}, arcs: [{step: a}, {step: b}]}
          - step: a
            tool: {kind: python, code: "raise ValueError()"}
            next: {arcs: [{step: fix, when: "{{ event.name == 'call.error' }}"}]}
          - step: fix
            tool: {kind: python, code: "result = 1"}
          - step: b
            tool: {kind: python, code: "result = 2"}
            next: {arcs: [{step: b2, when: "{{ event.name == 'call.done' and output.data.n == 2 }}"}]}
          - step: b2
            tool: {kind: python, code: "result = 3"}
        """
    )

    final, _, commands = drive(playbook, worker({"a": TaskError(message="boom", category="tool_error")}, {"b": {"n": 2}}))

    assert sorted(c.step for c in commands) == ["a", "b", "b2", "fix"]
    assert final.status == "FAILED" and final.error == "step 'a' failed: boom"


def test_a_loop_step_routes_on_loop_done() -> None:
    playbook = pb(
        """
        workflow:
          - step: start
            loop: {in: [1, 2], iterator: n}
            tool: {kind: python, code: "result = n"}
            next: {arcs: [{step: after, when: "{{ event.name == 'loop.done' and output.data.results | length == 2 }}"}]}
          - step: after
            tool: {kind: python, code: "result = 1"}
        """
    )

    final, _, commands = drive(playbook, worker({}))

    assert [c.step for c in commands] == ["start", "start", "after"] and final.status == "COMPLETED"


def test_a_failure_the_control_plane_imposes_does_not_route() -> None:
    """A dead-lettered or swept command fails without a call's error kind: the run ends at once."""
    dead = TaskError(message="moved to the dead-letter stream", kind="DeadLettered")

    final, _, commands = drive(pb(RECOVERY.replace("and error.retryable", "")), worker({"start": dead}))

    assert [c.step for c in commands] == ["start"] and final.status == "FAILED"
    assert final.error == "step 'start' failed: DeadLettered: moved to the dead-letter stream"
