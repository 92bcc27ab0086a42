"""The pure orchestrator, driven by an in-test fake worker (no I/O, no sleeps)."""

from __future__ import annotations

import inspect
import json
import textwrap
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from noetl_common import CommandSpec
from noetl_common.templating import evaluate, render
from noetl_control_api.dsl import Playbook, parse_playbook
from noetl_control_api.orchestrator import (
    CommandDraft,
    CommandOutcome,
    Decision,
    EventDraft,
    apply_outcome,
    cancel_execution,
    start_execution,
    state_from_json,
    state_to_json,
)

UPSTREAM = Path("/work/shared/conformance/upstream")
FIXTURES = Path("/work/shared/conformance/e2e-fixtures")
EXECUTION_ID = 7001
HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t, path: tests/t}\n"

Worker = Callable[[CommandDraft], CommandOutcome]


# -- harness ---------------------------------------------------------------------------------


@dataclass
class Trace:
    """Everything one driven execution produced."""

    final: Decision
    events: list[EventDraft] = field(default_factory=list)
    commands: list[CommandDraft] = field(default_factory=list)

    def entered(self, step: str) -> int:
        return sum(
            1
            for e in self.events
            if e.event_type == "step.enter" and e.step == step and e.status == "RUNNING"
        )

    def ran(self) -> list[str]:
        return [c.step for c in self.commands]

    def types(self) -> list[str]:
        return [e.event_type for e in self.events]


def _wire(state: Any) -> Any:
    """Round-trip the state through JSON, as the store does between two events."""
    return state_from_json(json.loads(json.dumps(state_to_json(state))))


def drive(
    pb: Playbook, worker: Worker, payload: dict[str, Any] | None = None, *, lifo: bool = False
) -> Trace:
    """Run an execution to its end, feeding each issued command to ``worker`` one at a time."""
    decision = start_execution(pb, execution_id=EXECUTION_ID, payload=payload or {}, catalog_path=pb.path)
    trace = Trace(final=decision, events=list(decision.events), commands=list(decision.commands))
    queue = deque(decision.commands)
    state = decision.state
    while queue:
        command = queue.pop() if lifo else queue.popleft()
        msgspec.json.encode(command)  # every command must be JSON on the wire
        decision = apply_outcome(pb, _wire(state), worker(command))
        state = decision.state
        trace.final = decision
        trace.events.extend(decision.events)
        trace.commands.extend(decision.commands)
        queue.extend(decision.commands)
        assert len(trace.commands) < 2000, "runaway execution"
    return trace


def outcome(
    command: CommandDraft, result: Any = None, *, error: str | None = None, set: dict[str, Any] | None = None
) -> CommandOutcome:
    if error is not None:
        return CommandOutcome(
            command_id=1, step=command.step, meta=command.meta, status="failed", error={"message": error}
        )
    return CommandOutcome(
        command_id=1, step=command.step, meta=command.meta, status="completed", result=result, set=set
    )


def canned(results: dict[str, Any] | None = None, fail: set[str] | None = None) -> Worker:
    """A worker returning ``results[step]`` (called with the command if callable), else ``{"step": name}``."""
    results = results or {}

    def run(command: CommandDraft) -> CommandOutcome:
        if fail and command.step in fail:
            return outcome(command, error="boom")
        value = results.get(command.step, {"step": command.step})
        return outcome(command, value(command) if callable(value) else value)

    return run


def python_worker(overrides: dict[str, Any] | None = None) -> Worker:
    """A tiny stand-in for the system worker: runs python tasks as upstream does, applies rules.

    It follows the contract documented in docs/orchestrator.md: render each task's config
    with ``spec.context`` + pipeline locals, inputs = ``spec.args`` overlaid with the
    task's non-null ``args``, evaluate rules against ``output``/``outcome``.
    """
    overrides = overrides or {}

    def run(command: CommandDraft) -> CommandOutcome:
        if command.step in overrides:
            return outcome(command, overrides[command.step])
        spec = msgspec.json.decode(msgspec.json.encode(command.spec), type=CommandSpec)
        local: dict[str, Any] = {"_prev": None}
        writes: dict[str, Any] = {}
        result: Any = None
        for task in spec.tasks:
            names = {**spec.context, **local, "_task": task.name, "_attempt": 1}
            config = render({k: v for k, v in task.config.items() if k != "code"}, names)
            inputs = {**spec.args, **{k: v for k, v in (config.get("args") or {}).items() if v is not None}}
            assert task.kind == "python", f"python_worker cannot run {task.kind}"
            scope: dict[str, Any] = {"input_data": inputs, **inputs}
            exec(task.config["code"], scope)
            if "result" not in scope and callable(scope.get("main")):
                wanted = inspect.signature(scope["main"]).parameters
                result = scope["main"](**{k: v for k, v in inputs.items() if k in wanted})
            else:
                result = scope.get("result")
            out = {"status": "ok", "result": result, "data": result, "error": None}
            for rule in task.rules:
                if rule.when is None or evaluate(rule.when, {**names, "outcome": out, "output": out}):
                    writes.update(render(rule.set or {}, {**names, "outcome": out, "output": out}))
                    break
            local[task.name] = result
            local["_prev"] = result
        return outcome(command, result, set=writes or None)

    return run


def load(path: Path) -> Playbook:
    if not path.is_file():
        pytest.skip(f"conformance playbook {path} is absent")
    return parse_playbook(path.read_text())


def inline(body: str) -> Playbook:
    return parse_playbook(HEADER + textwrap.dedent(body))


# -- linear and conditional routing ---------------------------------------------------------


def test_linear_chain_completes_with_last_result_and_event_taxonomy() -> None:
    pb = inline(
        """
        workload: {message: hi}
        workflow:
          - step: start
            tool: {kind: python, input: {m: "{{ message }}"}, code: "result = {'echo': m}"}
            next: {arcs: [{step: end}]}
          - step: end
            tool: {kind: python, code: "result = {'done': True}"}
        """
    )
    trace = drive(pb, python_worker())
    assert trace.final.status == "COMPLETED"
    assert trace.final.result == {"done": True}
    assert trace.final.state.results == {"start": {"echo": "hi"}, "end": {"done": True}}
    assert trace.types() == [
        "playbook.started",
        "step.enter",
        "next.evaluated",
        "step.enter",
        "next.evaluated",
        "playbook.completed",
    ]


def test_command_draft_carries_tasks_args_context_and_pool() -> None:
    pb = inline(
        """
        workload: {base: 10, url: "http://x"}
        workflow:
          - step: start
            tool: {kind: python, code: "result = {'n': 1}"}
            next: [{step: second, args: {n: "{{ start.n + base }}"}}]
          - step: second
            tool:
              - name: fetch
                kind: http
                url: "{{ url }}/{{ fetch_id }}"
            args: {doubled: "{{ args.n * 2 }}"}
        """
    )
    first = start_execution(pb, execution_id=EXECUTION_ID, payload={"extra": True}, catalog_path="tests/t")
    (cmd,) = first.commands
    assert (cmd.step, cmd.pool, cmd.tool_kind) == ("start", "shared", "python")
    decision = apply_outcome(pb, first.state, outcome(cmd, {"n": 1}))
    (second,) = decision.commands
    spec = second.spec
    assert spec.args == {"n": 11, "doubled": 22}
    # Task configs travel unrendered: the worker renders them with pipeline locals.
    assert spec.tasks[0].config == {"url": "{{ url }}/{{ fetch_id }}"}
    context = spec.context
    assert context["workload"] == {"base": 10, "url": "http://x", "extra": True}
    assert context["base"] == 10 and context["extra"] is True
    assert context["start"] == {"n": 1} and context["second"] is None
    assert context["args"] == context["input"] == {"n": 11, "doubled": 22}
    assert context["ctx"] == {} and context["execution_id"] == EXECUTION_ID
    assert second.meta["step"] == "second" and isinstance(second.meta["seq"], int)


def test_system_paths_and_kinds_route_to_the_system_pool() -> None:
    pb = parse_playbook(
        "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: s, path: system/cleanup}\n"
        "workflow: [{step: start, tool: {kind: http, url: x}}]\n"
    )
    decision = start_execution(pb, execution_id=1, payload={}, catalog_path="system/cleanup")
    assert decision.commands[0].pool == "system"


def test_exclusive_fires_first_matching_arc_only() -> None:
    pb = inline(
        """
        workflow:
          - step: start
            tool: {kind: noop}
            next:
              spec: {mode: exclusive}
              arcs:
                - {step: a, when: "{{ start.v > 5 }}"}
                - {step: b, when: "{{ start.v > 1 }}"}
                - {step: c}
          - {step: a, tool: {kind: noop}}
          - {step: b, tool: {kind: noop}}
          - {step: c, tool: {kind: noop}}
        """
    )
    assert drive(pb, canned({"start": {"v": 3}})).ran() == ["start", "b"]
    assert drive(pb, canned({"start": {"v": 9}})).ran() == ["start", "a"]
    assert drive(pb, canned({"start": {"v": 0}})).ran() == ["start", "c"]


def test_inclusive_fires_every_matching_arc() -> None:
    pb = inline(
        """
        workflow:
          - step: start
            tool: {kind: noop}
            next:
              spec: {mode: inclusive}
              arcs:
                - {step: a, when: "{{ start.v > 5 }}"}
                - {step: b, when: "{{ start.v > 1 }}"}
                - {step: c}
          - {step: a, tool: {kind: noop}}
          - {step: b, tool: {kind: noop}}
          - {step: c, tool: {kind: noop}}
        """
    )
    assert drive(pb, canned({"start": {"v": 3}})).ran() == ["start", "b", "c"]


def test_step_when_false_runs_nothing_and_fires_no_arcs() -> None:
    pb = inline(
        """
        workload: {go: false}
        workflow:
          - step: start
            next: [guarded]
          - step: guarded
            when: "{{ workload.go }}"
            tool: {kind: noop}
            next: [after]
          - {step: after, tool: {kind: noop}}
        """
    )
    trace = drive(pb, canned())
    assert trace.ran() == [] and trace.final.status == "COMPLETED"
    skipped = [e for e in trace.events if e.step == "guarded" and e.event_type == "step.enter"]
    assert [e.status for e in skipped] == ["SKIPPED"]
    assert drive(pb, canned(), {"go": True}).ran() == ["guarded", "after"]


def test_route_through_step_and_terminal_without_tool() -> None:
    pb = inline(
        """
        workflow:
          - step: start
            next: {arcs: [{step: router, args: {k: 1}}]}
          - step: router
            next: {arcs: [{step: work, args: {k: "{{ args.k + 1 }}"}}]}
          - step: work
            tool: {kind: noop}
            next: {arcs: [{step: done}]}
          - step: done
        """
    )
    trace = drive(pb, canned())
    assert trace.ran() == ["work"]
    assert trace.commands[0].spec.args == {"k": 2}
    assert trace.final.status == "COMPLETED"
    assert trace.entered("done") == 1
    assert trace.final.result == {"step": "work"}


def test_failed_step_fails_the_playbook_and_fires_no_arcs() -> None:
    pb = inline(
        """
        workflow:
          - {step: start, tool: {kind: noop}, next: [a]}
          - {step: a, tool: {kind: noop}, next: [b]}
          - {step: b, tool: {kind: noop}}
        """
    )
    trace = drive(pb, canned(fail={"a"}))
    assert trace.ran() == ["start", "a"]
    assert trace.final.status == "FAILED"
    assert trace.final.error is not None and "'a'" in trace.final.error and "boom" in trace.final.error
    assert trace.events[-1].event_type == "playbook.failed"


def test_template_error_fails_the_step_naming_it_without_raising() -> None:
    pb = inline(
        """
        workflow:
          - {step: start, tool: {kind: noop}, next: [bad]}
          - step: bad
            tool: {kind: noop}
            input: {x: "{{ no_such_name.field }}"}
        """
    )
    trace = drive(pb, canned())
    assert trace.ran() == ["start"]
    assert trace.final.status == "FAILED"
    assert "'bad'" in (trace.final.error or "") and "no_such_name" in (trace.final.error or "")


def test_bad_arc_condition_fails_naming_the_source_step() -> None:
    pb = inline(
        """
        workflow:
          - step: start
            tool: {kind: noop}
            next: {arcs: [{step: end, when: "{{ start.n > threshold }}"}]}
          - {step: end}
        """
    )
    trace = drive(pb, canned({"start": {"n": 1}}))
    assert trace.final.status == "FAILED"
    assert "'start'" in (trace.final.error or "") and "threshold" in (trace.final.error or "")


def test_implicit_routing_to_end() -> None:
    pb = load(UPSTREAM / "v10_test_implicit_end_routing.yaml")
    trace = drive(pb, python_worker())
    assert trace.ran() == ["start", "step1", "end"]
    assert trace.final.state.results["step1"] == {"status": "step1_complete"}
    assert trace.final.result == {"status": "workflow_complete"}


def test_set_on_steps_arcs_and_rules_patches_ctx_with_events() -> None:
    pb = inline(
        """
        workflow:
          - step: start
            tool:
              kind: python
              code: "result = {'n': 2}"
              spec: {policy: {rules: [{else: {then: {set: {ctx.from_rule: "{{ output.data.n }}"}}}}]}}
            set: {ctx.from_step: "{{ start.n * 10 }}", vars.v: 1}
            next: {arcs: [{step: end, set: {ctx.cfg.deep: "{{ ctx.from_step + 1 }}"}}]}
          - step: end
            tool: {kind: python, input: {c: "{{ ctx }}"}, code: "result = c"}
        """
    )
    trace = drive(pb, python_worker())
    assert trace.final.state.ctx == {"from_rule": 2, "from_step": 20, "cfg": {"deep": 21}}
    assert trace.final.state.vars == {"v": 1}
    assert trace.final.result == {"from_rule": 2, "from_step": 20, "cfg": {"deep": 21}}
    patches = [(e.context or {}).get("source") for e in trace.events if e.event_type == "ctx.patched"]
    assert patches == ["rules", "step.set", "arc:start->end"]


def test_duplicate_and_late_outcomes_are_ignored() -> None:
    pb = inline("workflow: [{step: start, tool: {kind: noop}, next: [b]}, {step: b, tool: {kind: noop}}]\n")
    first = start_execution(pb, execution_id=1, payload={}, catalog_path="t")
    (cmd,) = first.commands
    second = apply_outcome(pb, first.state, outcome(cmd, {}))
    again = apply_outcome(pb, second.state, outcome(cmd, {}))
    assert again.commands == [] and again.events == [] and again.status == "RUNNING"
    assert state_to_json(again.state) == state_to_json(second.state)


def test_apply_outcome_does_not_mutate_its_input_state() -> None:
    pb = inline("workflow: [{step: start, tool: {kind: noop}, next: [b]}, {step: b, tool: {kind: noop}}]\n")
    first = start_execution(pb, execution_id=1, payload={}, catalog_path="t")
    before = state_to_json(first.state)
    apply_outcome(pb, first.state, outcome(first.commands[0], {"x": 1}))
    assert state_to_json(first.state) == before


def test_cancel_stops_new_commands() -> None:
    pb = inline("workflow: [{step: start, tool: {kind: noop}, next: [b]}, {step: b, tool: {kind: noop}}]\n")
    first = start_execution(pb, execution_id=1, payload={}, catalog_path="t")
    cancelled = cancel_execution(pb, first.state, "user asked")
    assert cancelled.status == "CANCELLED" and cancelled.commands == []
    assert cancelled.events[-1].event_type == "playbook.cancelled"
    late = apply_outcome(pb, cancelled.state, outcome(first.commands[0], {}))
    assert late.status == "CANCELLED" and late.commands == [] and late.events == []
    assert cancel_execution(pb, cancelled.state, "again").events == []


def test_state_round_trips_through_json() -> None:
    pb = load(UPSTREAM / "v10_fanout_reduce_phase6.yaml")
    first = start_execution(pb, execution_id=1, payload={}, catalog_path=pb.path)
    second = apply_outcome(pb, first.state, outcome(first.commands[0], {"status": "ok"}))
    assert state_to_json(state_from_json(state_to_json(second.state))) == state_to_json(second.state)
    assert second.state.ctx == {} and second.state.results == {"start": {"status": "ok"}}
