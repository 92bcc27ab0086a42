"""The pure orchestrator, driven by an in-test fake worker (no I/O, no sleeps)."""

from __future__ import annotations

import inspect
import json
import random
import textwrap
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from noetl_common import CommandSpec, TaskError
from noetl_common.templating import TemplateLimits, evaluate, render
from noetl_control_api import Settings
from noetl_control_api.dsl import Playbook, parse_playbook
from noetl_control_api.orchestrator import (
    CommandDraft,
    CommandOutcome,
    Decision,
    EventDraft,
    apply_outcome,
    cancel_execution,
    replay,
    start_execution,
    state_from_json,
    state_to_json,
)
from noetl_control_api.orchestrator._templates import template_names
from noetl_dev.testing import conformance_dir

UPSTREAM = conformance_dir() / "upstream"
FIXTURES = conformance_dir() / "e2e-fixtures"
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
    outcomes: list[CommandOutcome] = field(default_factory=list)

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
        reported = worker(command)
        trace.outcomes.append(reported)
        decision = apply_outcome(pb, _wire(state), reported)
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
            command_id=1, step=command.step, meta=command.meta, status="failed", error=TaskError(message=error)
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
    task's ``args`` (YAML nulls excluded), evaluate rules against ``output``/``outcome``.
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
            declared = task.config.get("args") or {}
            # A null declared in YAML is a default the step's args override; a value rendered to none is not.
            own = {k: v for k, v in (config.get("args") or {}).items() if declared.get(k) is not None}
            inputs = {**spec.args, **own}
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
    # the context carries the names its tasks' templates read (fetch_id is none: the worker
    # fails that template as an unknown name, as it would with every name at hand)
    assert spec.context == {"url": "http://x"}
    assert second.meta["step"] == "second" and isinstance(second.meta["seq"], int)


def test_a_command_carries_the_names_its_templates_and_conditions_read_and_no_other() -> None:
    pb = inline(
        """
        workload: {base: 10, unused: "x"}
        workflow:
          - step: start
            tool: {kind: python, code: "result = {'items': [1, 2, 3]}"}
            next: [{step: fan}]
          - step: fan
            loop: {in: "{{ start.items }}", iterator: x, spec: {mode: parallel}}
            tool:
              - name: add
                kind: python
                input: {v: "{{ x + workload.base }}"}
                code: "result = v"
                spec: {policy: {rules: [{when: "ctx.limit and outcome.result > ctx.limit", then: {do: fail}}]}}
        """
    )
    first = start_execution(pb, execution_id=EXECUTION_ID, payload={}, catalog_path="tests/t")
    (cmd,) = first.commands
    decision = apply_outcome(pb, first.state, outcome(cmd, {"items": [1, 2, 3]}))
    contexts = [c.spec.context for c in decision.commands]
    # the iterator, the workload and ctx (read by the rule's bare condition), not the list
    # the loop iterates (start) nor the other workload keys
    assert contexts[0] == {"x": 1, "workload": {"base": 10, "unused": "x"}, "ctx": {}}
    assert [c["x"] for c in contexts] == [1, 2, 3]
    assert all("start" not in c and "base" not in c and "args" not in c for c in contexts)


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


NESTED_RANGE = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}true"
HOUR = TemplateLimits(max_seconds=3600.0)  # a refusal naming another limit does not come from the clock


def test_a_template_bomb_in_an_arc_condition_fails_the_execution_naming_step_and_field() -> None:
    pb = inline(
        f"""
        workflow:
          - step: start
            tool: {{kind: noop}}
            next: {{arcs: [{{step: end, when: "{NESTED_RANGE}"}}]}}
          - {{step: end}}
        """
    )
    decision = start_execution(pb, execution_id=EXECUTION_ID, payload={}, catalog_path=pb.path, limits=HOUR)
    (command,) = decision.commands
    final = apply_outcome(pb, decision.state, outcome(command, {}), limits=HOUR)
    assert final.status == "FAILED" and final.commands == []
    assert final.error is not None
    assert final.error.startswith("step 'start': next[0].when: template ")
    assert "more than 100000 loop iterations (NOETL_TEMPLATE_MAX_ITERATIONS)" in final.error
    failed = final.events[-1]
    assert failed.event_type == "playbook.failed" and failed.step == "start"


def test_a_template_bomb_in_step_args_fails_the_execution_naming_step_and_field() -> None:
    pb = inline(
        """
        workflow:
          - {step: start, tool: {kind: noop}, next: [fetch]}
          - step: fetch
            tool: {kind: noop}
            args: {url: "https://example.test/{{ 'x'.ljust(10**12) }}", page: 1}
        """
    )
    trace = drive(pb, canned())
    assert trace.ran() == ["start"]
    assert trace.final.status == "FAILED"
    error = trace.final.error or ""
    assert error.startswith("step 'fetch': args.url: template ")
    assert "would be larger than 1048576 bytes (NOETL_TEMPLATE_MAX_OUTPUT_BYTES)" in error


def test_a_template_bomb_in_arc_args_names_the_arc() -> None:
    pb = inline(
        """
        workflow:
          - step: start
            tool: {kind: noop}
            next: {arcs: [{step: end, args: {n: "{{ (10**9999)**9999 }}"}}]}
          - {step: end}
        """
    )
    trace = drive(pb, canned())
    assert trace.final.status == "FAILED"
    assert (trace.final.error or "").startswith("step 'start': next[0].args.n: template ")
    assert "NOETL_TEMPLATE_MAX_INT_BITS" in (trace.final.error or "")


def test_template_limits_given_to_the_orchestrator_apply() -> None:
    pb = inline(
        """
        workflow:
          - step: start
            tool: {kind: noop}
            args: {ids: "{% for i in range(workload.n) %}{{ i }}{% endfor %}"}
        """
    )
    small = TemplateLimits(max_iterations=10)
    kept = start_execution(pb, execution_id=EXECUTION_ID, payload={"n": 10}, catalog_path=pb.path, limits=small)
    assert kept.status == "RUNNING" and kept.commands[0].spec.args["ids"] == "0123456789"
    over = start_execution(pb, execution_id=EXECUTION_ID, payload={"n": 11}, catalog_path=pb.path, limits=small)
    assert over.status == "FAILED" and "more than 10 loop iterations" in (over.error or "")


def test_settings_read_the_template_limits() -> None:
    base = {"NOETL_DATABASE_URL": "postgresql://x/y"}
    assert Settings.from_env(base).template_limits == TemplateLimits()
    assert TemplateLimits().max_seconds == 0.25  # /healthz answers within a second while a bomb runs
    settings = Settings.from_env({**base, "NOETL_TEMPLATE_MAX_INT_BITS": "256", "NOETL_TEMPLATE_MAX_SECONDS": "1"})
    assert settings.template_limits == TemplateLimits(max_int_bits=256, max_seconds=1.0)


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


# -- loops ---------------------------------------------------------------------------------


LOOP = """
workload: {xs: [10, 20, 30]}
workflow:
  - step: start
    loop: {in: "{{ xs }}", iterator: x, spec: {mode: MODE, max_in_flight: 2}}
    tool: {kind: python, input: {v: "{{ x }}", i: "{{ iter.index }}"}, code: "result = {'v': v * 2, 'i': i}"}
    next: {arcs: [{step: end, args: {n: "{{ start.results | length }}"}}]}
  - step: end
    tool: {kind: python, code: "result = input_data"}
"""


def test_sequential_loop_issues_one_iteration_at_a_time_in_order() -> None:
    pb = inline(LOOP.replace("MODE", "sequential"))
    first = start_execution(pb, execution_id=1, payload={}, catalog_path="t")
    assert len(first.commands) == 1
    assert [e.event_type for e in first.events][-1] == "loop.started"
    trace = drive(pb, python_worker())
    loop_commands = [c for c in trace.commands if c.step == "start"]
    assert [c.meta["iteration"] for c in loop_commands] == [0, 1, 2]
    assert [c.spec.context["x"] for c in loop_commands] == [10, 20, 30]
    assert loop_commands[1].spec.context["iter"] == {"x": 20, "index": 1}
    assert trace.final.state.results["start"] == {
        "results": [{"v": 20, "i": 0}, {"v": 40, "i": 1}, {"v": 60, "i": 2}]
    }
    assert trace.final.result == {"n": 3}
    assert trace.types().count("loop.done") == 1 and trace.entered("start") == 1


def test_parallel_loop_respects_max_in_flight_and_keeps_input_order() -> None:
    pb = inline(LOOP.replace("MODE", "parallel"))
    first = start_execution(pb, execution_id=1, payload={}, catalog_path="t")
    assert [c.meta["iteration"] for c in first.commands] == [0, 1]
    # Complete out of order: the aggregate must still follow the input order.
    trace = drive(pb, python_worker(), lifo=True)
    assert trace.final.state.results["start"]["results"] == [
        {"v": 20, "i": 0},
        {"v": 40, "i": 1},
        {"v": 60, "i": 2},
    ]
    assert trace.final.status == "COMPLETED"


def test_empty_loop_completes_with_no_commands() -> None:
    pb = inline(LOOP.replace("MODE", "sequential"))
    trace = drive(pb, python_worker(), {"xs": []})
    assert [c.step for c in trace.commands] == ["end"]
    assert trace.final.state.results["start"] == {"results": []}


def test_failed_iteration_fails_the_playbook_naming_step_and_iteration() -> None:
    pb = inline(LOOP.replace("MODE", "sequential"))

    def worker(command: CommandDraft) -> CommandOutcome:
        if command.meta.get("iteration") == 1:
            return outcome(command, error="bad item")
        return python_worker()(command)

    trace = drive(pb, worker)
    assert trace.final.status == "FAILED"
    assert "'start' iteration 1" in (trace.final.error or "")
    assert [c.meta.get("iteration") for c in trace.commands] == [0, 1]


def test_loop_over_a_non_list_fails_the_step() -> None:
    trace = drive(inline(LOOP.replace("MODE", "sequential")), python_worker(), {"xs": 5})
    assert trace.final.status == "FAILED" and "loop.in" in (trace.final.error or "")


def test_rule_ctx_writes_are_visible_to_the_next_sequential_iteration() -> None:
    pb = inline(
        """
        workload: {xs: [1, 2, 3]}
        workflow:
          - step: start
            set: {ctx.acc: []}
            next: [sum]
          - step: sum
            loop: {in: "{{ xs }}", iterator: x}
            tool:
              kind: python
              input: {acc: "{{ ctx.acc }}", x: "{{ x }}"}
              code: "result = acc + [x]"
              spec: {policy: {rules: [{else: {then: {set: {ctx.acc: "{{ output.data }}"}}}}]}}
        """
    )
    trace = drive(pb, python_worker())
    assert trace.final.state.ctx == {"acc": [1, 2, 3]}
    assert trace.final.state.results["sum"]["results"] == [[1], [1, 2], [1, 2, 3]]


# -- fan-in barrier -------------------------------------------------------------------------


def test_barrier_merges_arc_args_in_workflow_order_of_sources() -> None:
    pb = inline(
        """
        workflow:
          - step: start
            tool: {kind: noop}
            next: {spec: {mode: inclusive}, arcs: [{step: b}, {step: a}]}
          - {step: a, tool: {kind: noop}, next: [{step: join, args: {who: a, a: 1}}]}
          - {step: b, tool: {kind: noop}, next: [{step: join, args: {who: b, b: 1}}]}
          - {step: join, tool: {kind: noop}}
        """
    )
    for lifo in (False, True):
        trace = drive(pb, canned(), lifo=lifo)
        joins = [c for c in trace.commands if c.step == "join"]
        assert len(joins) == 1
        assert joins[0].spec.args == {"who": "b", "a": 1, "b": 1}
        assert trace.ran().index("join") == 3


def test_barrier_does_not_wait_for_a_branch_that_can_no_longer_reach_it() -> None:
    pb = inline(
        """
        workflow:
          - step: start
            tool: {kind: noop}
            next: {spec: {mode: inclusive}, arcs: [{step: fast}, {step: slow}]}
          - {step: fast, tool: {kind: noop}, next: [join]}
          - step: slow
            tool: {kind: noop}
            next: {arcs: [{step: join, when: "{{ slow.go }}"}, {step: elsewhere}]}
          - {step: elsewhere, tool: {kind: noop}}
          - {step: join, tool: {kind: noop}}
        """
    )
    trace = drive(pb, canned({"slow": {"go": False}}))
    assert sorted(trace.ran()) == ["elsewhere", "fast", "join", "slow", "start"]
    assert trace.entered("join") == 1 and trace.final.status == "COMPLETED"


def test_barrier_waits_for_a_live_branch_still_running() -> None:
    pb = load(UPSTREAM / "v10_fanout_reduce_phase6.yaml")
    first = start_execution(pb, execution_id=1, payload={}, catalog_path=pb.path)
    second = apply_outcome(pb, first.state, outcome(first.commands[0], {"status": "ok"}))
    normalize, enrich = second.commands
    third = apply_outcome(pb, second.state, outcome(normalize, {"normalized": True}))
    assert third.commands == [] and third.status == "RUNNING"
    assert "reduce_customer" in third.state.joins
    fourth = apply_outcome(pb, third.state, outcome(enrich, {"enriched": True}))
    assert [c.step for c in fourth.commands] == ["reduce_customer"]


def test_cycles_route_back_through_a_join() -> None:
    pb = load(FIXTURES / "test_pagination_offset.yaml")
    pages = iter([True, True, False])

    def check(command: CommandDraft) -> dict[str, Any]:
        inputs = render(command.spec.tasks[0].config["args"], command.spec.context)
        offset = inputs["current_offset"]
        collected = inputs["collected"] + [offset]
        return {"collected_users": collected, "has_more": next(pages), "next_offset": offset + 10}

    trace = drive(pb, canned({"check_pagination": check}))
    assert trace.ran() == ["start"] + ["fetch_page", "check_pagination"] * 3 + ["validate_results", "end"]
    assert trace.final.state.ctx["collected_users"] == [0, 10, 20]
    assert trace.final.state.ctx["offset"] == 30 and trace.final.state.ctx["has_more"] is False
    assert trace.final.status == "COMPLETED"


# -- conformance playbooks through the orchestrator -------------------------------------------


@pytest.mark.parametrize("name", ["c2_hello_world", "v10_hello_world"])
def test_hello_world(name: str) -> None:
    trace = drive(load(UPSTREAM / f"{name}.yaml"), python_worker())
    status = "success" if name.startswith("c2") else "ok"
    assert trace.final.status == "COMPLETED"
    assert trace.final.state.results["test_step"] == {"status": status, "data": {"message": "Hello World"}}
    assert trace.final.result == {"status": "complete"}


@pytest.mark.parametrize("name", ["c2_control_flow_workbook", "v10_control_flow_workbook"])
def test_control_flow_workbook_hot_path(name: str) -> None:
    trace = drive(load(UPSTREAM / f"{name}.yaml"), python_worker())
    results = trace.final.state.results
    assert trace.final.status == "COMPLETED"
    assert results["eval_flag"] == {"is_hot": True, "message": "hot"}
    assert results["hot_task_a"] == {"who": "A"} and results["hot_task_b"] == {"who": "B"}  # C12 for c2_
    assert "cold_path" not in results and "cold_task" not in results
    assert trace.entered("end") == 1  # C11 barrier
    assert trace.ran()[-1] == "end"


@pytest.mark.parametrize("name", ["c2_control_flow_workbook", "v10_control_flow_workbook"])
def test_control_flow_workbook_cold_path(name: str) -> None:
    trace = drive(load(UPSTREAM / f"{name}.yaml"), python_worker(), {"temperature_c": 20})
    results = trace.final.state.results
    assert results["eval_flag"]["is_hot"] is False
    assert results["cold_task"] == {"who": "C"}
    assert not any(step.startswith("hot_") for step in trace.ran())
    assert trace.entered("end") == 1 and trace.final.status == "COMPLETED"


@pytest.mark.parametrize("name", ["c2_test_args_passing", "v10_test_args_passing"])
def test_args_passing_keeps_native_types(name: str) -> None:
    trace = drive(load(UPSTREAM / f"{name}.yaml"), python_worker())
    assert trace.final.status == "COMPLETED", trace.final.error
    assert trace.final.state.results["use_vars"] == {"status": "success", "result": 300}
    if name.startswith("v10"):
        assert trace.final.state.ctx == {"test_var": 100, "computed": 200}


@pytest.mark.parametrize("name", ["c2_test_loop_instance_isolation", "v10_test_loop_instance_isolation"])
def test_loop_instance_isolation(name: str) -> None:
    trace = drive(load(UPSTREAM / f"{name}.yaml"), python_worker())
    results = trace.final.state.results
    assert trace.final.status == "COMPLETED", trace.final.error
    assert results["process_items_users"]["results"] == [
        {"type": "user", "id": 1, "name": "Alice", "message": "Processed user Alice"},
        {"type": "user", "id": 2, "name": "Bob", "message": "Processed user Bob"},
    ]
    assert [r["name"] for r in results["process_items_products"]["results"]] == ["Laptop", "Mouse"]
    verify = results["verify_results"]
    assert (verify["users_count"], verify["products_count"]) == (2, 2)
    assert verify["verification"] == "Both loops completed independently"


def test_user_profile_scorer() -> None:
    trace = drive(load(UPSTREAM / "c2_user_profile_scorer.yaml"), python_worker())
    results = trace.final.state.results
    assert trace.final.status == "COMPLETED", trace.final.error
    final = results["finalize_result"]
    assert final["user_name"] == "TestUser" and final["score_category"] == "Junior"
    assert final["profile_score"] == pytest.approx(15.8, abs=1e-9)
    assert final["execution_id"] == "standalone_execution" and final["processing_status"] == "completed"
    expected = {"experience": 6.0, "performance": 6.58, "department": 2.25, "age": 1.0}
    assert final["score_breakdown"] == pytest.approx(expected, abs=1e-9)
    assert results["score_experience"] == {"experience_score": 15.0, "experience_weight": 0.4}
    assert trace.final.result == final


def test_transient_ctx_updates_keep_other_keys() -> None:
    trace = drive(load(UPSTREAM / "v10_test_transient.yaml"), python_worker())
    results = trace.final.state.results
    assert trace.final.status == "COMPLETED", trace.final.error
    assert all(results["test_get_var"]["data"]["verification"].values())
    assert results["verify_updates"]["all_checks_passed"] is True
    assert trace.final.state.ctx == {
        "counter": 1,
        "status_var": "processing",
        "config": {"timeout": 30, "retries": 3},
    }
    # execution_id is the execution's, not the workload's unrendered '{{ job.uuid }}'.
    assert template_names(load(UPSTREAM / "v10_test_transient.yaml"), trace.final.state, {})["execution_id"] == (
        EXECUTION_ID
    )


def test_heavy_loop_aggregation() -> None:
    trace = drive(load(UPSTREAM / "v10_heavy_loop_aggregation.yaml"), python_worker())
    state = trace.final.state
    assert trace.final.status == "COMPLETED", trace.final.error
    assert [r["item_id"] for r in state.ctx["loop_results"]] == list(range(100))
    aggregate = state.results["aggregate_results"]
    assert aggregate["summary"] == {
        "total_processed": 100,
        "successful": 100,
        "failed": 0,
        "success_rate": 100.0,
    }
    metrics = aggregate["metrics"]
    assert metrics["total_computed_value"] == 990000 and metrics["average_computed_value"] == 9900.0
    assert metrics["even_items"] == 50 and set(metrics["by_category"].values()) == {10}
    assert state.results["validate_results"]["all_checks_passed"] is True
    assert trace.final.result == {
        "status": "completed",
        "test_name": "heavy_loop_aggregation",
        "test_result": "validated",
        "all_passed": True,
    }


def test_fanout_reduce_runs_reduce_once_after_both_branches() -> None:
    trace = drive(load(UPSTREAM / "v10_fanout_reduce_phase6.yaml"), python_worker())
    assert trace.final.status == "COMPLETED"
    assert trace.entered("reduce_customer") == 1
    assert trace.ran() == ["start", "normalize_customer", "enrich_customer", "reduce_customer"]
    assert trace.final.state.results["reduce_customer"] == {"reduced": True}


@pytest.mark.parametrize(("value", "path", "final"), [(15, "high", 30), (4, "low", 104), (10, "low", 110)])
def test_comprehensive_routes_on_the_random_value(value: int, path: str, final: int) -> None:
    start = {"status": "initialized", "random_value": value, "message": "Starting comprehensive test"}
    trace = drive(load(UPSTREAM / "v10_comprehensive_test.yaml"), python_worker({"start": start}))
    assert trace.final.status == "COMPLETED", trace.final.error
    assert trace.ran() == ["start", f"process_{path}", "summarize", "end"]
    summary = trace.final.state.results["summarize"]
    assert (summary["original_value"], summary["processing_path"], summary["final_result"]) == (
        value,
        path,
        final,
    )


def test_http_result_flows_through_step_inputs() -> None:
    response = {"status_code": 200, "headers": {}, "body": {"status": "ok"}}
    trace = drive(
        load(UPSTREAM / "v10_http_test.yaml"), python_worker({"start": response}), {"api_url": "http://h"}
    )
    assert trace.commands[0].spec.tasks[0].config["url"] == "{{ api_url }}/health"
    assert trace.commands[0].spec.context["api_url"] == "http://h"
    results = trace.final.state.results
    assert results["process"] == {"status": "ok", "status_code": 200, "body": {"status": "ok"}}
    assert results["verify"] == {"verified": True, "status_code": 200, "status": "passed"}
    assert trace.final.result == {"status": "completed", "test_passed": True}


def test_http_retry_rules_travel_to_the_worker() -> None:
    pb = load(UPSTREAM / "c2_http_retry_with_stop.yaml")
    first = start_execution(pb, execution_id=1, payload={"test_url": "http://h/get"}, catalog_path=pb.path)
    (task,) = first.commands[0].spec.tasks
    assert [r.do for r in task.rules] == ["retry", "fail", "continue"]
    assert task.rules[0].attempts == 3 and task.rules[0].backoff == "exponential"
    trace = drive(pb, python_worker({"start": {"status_code": 200}}))
    assert trace.final.status == "COMPLETED" and trace.final.result == {"status": "complete"}


def test_playbook_composition_loop_binds_each_user() -> None:
    pb = load(UPSTREAM / "c2_playbook_composition.yaml")
    seen: list[Any] = []

    def worker(command: CommandDraft) -> CommandOutcome:
        if command.step == "process_users":
            seen.append(command.spec.context["user"]["name"])
            assert [t.kind for t in command.spec.tasks] == ["playbook", "postgres"]
            return outcome(command, {"profile_score": 16.0})
        if command.spec.tasks[0].kind == "postgres":
            return outcome(command, {"rows": []})
        return python_worker()(command)

    trace = drive(pb, worker)
    assert trace.final.status == "COMPLETED", trace.final.error
    assert seen == ["Alice", "Bob", "Charlie", "Diana"]
    # C9: `process_users.data` is run-produced data that does not exist, so it reads as none.
    assert trace.final.state.results["validate_results"]["status"] == "tracking"
    assert trace.final.result["users_processed"] == 4


PYTHON_ONLY_FIXTURES = [
    "hello_world",
    "simple_python",
    "atomic_item_context",
    "peer_three_step",
    "test_simple_loop",
    "test_implicit_end_routing",
    "control_flow_workbook",
]


@pytest.mark.parametrize("name", PYTHON_ONLY_FIXTURES)
def test_e2e_python_fixtures_complete(name: str) -> None:
    trace = drive(load(FIXTURES / f"{name}.yaml"), python_worker())
    assert trace.final.status == "COMPLETED", trace.final.error
    assert trace.ran()[-1] == "end"


def test_simple_loop_fixture_aggregates_in_order() -> None:
    trace = drive(load(FIXTURES / "test_simple_loop.yaml"), python_worker())
    assert [r["doubled"] for r in trace.final.state.results["loop_test"]["results"]] == [20, 40, 60]


def test_a_second_token_for_a_running_loop_waits_for_the_loop_to_finish() -> None:
    pb = inline(
        """
        workload: {xs: [1, 2]}
        workflow:
          - step: start
            tool: {kind: noop}
            next: {spec: {mode: inclusive}, arcs: [{step: each, args: {n: 1}}, {step: each, args: {n: 2}}]}
          - step: each
            loop: {in: "{{ xs }}", iterator: x}
            tool: {kind: noop}
        """
    )
    trace = drive(pb, canned())
    runs = [(c.spec.args["n"], c.meta["iteration"]) for c in trace.commands if c.step == "each"]
    assert runs == [(1, 0), (1, 1), (2, 0), (2, 1)]
    assert trace.entered("each") == 2 and trace.final.status == "COMPLETED"


def test_a_command_keeps_the_ctx_it_was_issued_with() -> None:
    pb = inline(
        """
        workflow:
          - step: start
            tool: {kind: noop}
            next: {spec: {mode: inclusive}, arcs: [{step: a}, {step: router}]}
          - {step: a, tool: {kind: noop, input: {late: "{{ ctx.late }}"}}}
          - step: router
            set: {ctx.late: 1, ctx.cfg.k: 2}
        """
    )
    first = start_execution(pb, execution_id=1, payload={}, catalog_path="t")
    decision = apply_outcome(pb, first.state, outcome(first.commands[0], {}))
    (command,) = decision.commands
    assert command.step == "a" and command.spec.context["ctx"] == {}
    assert decision.state.ctx == {"late": 1, "cfg": {"k": 2}}


def test_a_non_object_payload_fails_the_execution_cleanly() -> None:
    pb = inline("workflow: [{step: start, tool: {kind: noop}}]\n")
    decision = start_execution(pb, execution_id=1, payload=[1, 2], catalog_path="t")  # type: ignore[arg-type]
    assert decision.status == "FAILED" and decision.commands == []
    assert "payload" in (decision.error or "")


@pytest.mark.parametrize(
    "name", ["v10_test_transient", "c2_test_loop_instance_isolation", "v10_control_flow_workbook"]
)
def test_replaying_the_outcomes_rebuilds_the_same_state(name: str) -> None:
    pb = load(UPSTREAM / f"{name}.yaml")
    trace = drive(pb, python_worker(), lifo=True)
    rebuilt = replay(pb, execution_id=EXECUTION_ID, payload={}, catalog_path=pb.path, outcomes=trace.outcomes)
    assert state_to_json(rebuilt) == state_to_json(trace.final.state)
    assert rebuilt.status == "COMPLETED"


def _random_dag(rng: random.Random, size: int) -> Playbook:
    names = ["start"] + [f"s{i}" for i in range(1, size)]
    steps = []
    for i, name in enumerate(names):
        later = names[i + 1 :]
        targets = sorted(rng.sample(later, k=min(len(later), rng.randint(0, 3))), key=names.index)
        arcs = "".join(f"\n        - step: {t}" for t in targets)
        nxt = f"\n    next:\n      spec: {{mode: inclusive}}\n      arcs:{arcs}" if targets else ""
        steps.append(f"  - step: {name}\n    tool: {{kind: noop}}{nxt}")
    return parse_playbook(HEADER + "workflow:\n" + "\n".join(steps) + "\n")


@pytest.mark.parametrize("seed", range(25))
def test_barrier_runs_every_reachable_step_once_after_all_its_live_predecessors(seed: int) -> None:
    rng = random.Random(seed)
    pb = _random_dag(rng, rng.randint(4, 12))
    decision = start_execution(pb, execution_id=1, payload={}, catalog_path="t")
    pending, state = list(decision.commands), decision.state
    finished: list[str] = []
    while pending:
        command = pending.pop(rng.randrange(len(pending)))
        predecessors = {s.name for s in pb.steps if s.next and command.step in {a.step for a in s.next.arcs}}
        reachable = {s for s in predecessors if s == "start" or s in _reachable_from_start(pb)}
        assert reachable <= set(finished), f"{command.step} ran before {reachable - set(finished)}"
        decision = apply_outcome(pb, state, outcome(command, {}))
        finished.append(command.step)
        state = decision.state
        pending.extend(decision.commands)
    assert decision.status == "COMPLETED"
    assert sorted(finished) == sorted(_reachable_from_start(pb))


def _reachable_from_start(pb: Playbook) -> set[str]:
    seen, queue = {"start"}, ["start"]
    while queue:
        step = pb.step(queue.pop())
        for arc in step.next.arcs if step.next else []:
            if arc.step not in seen:
                seen.add(arc.step)
                queue.append(arc.step)
    return seen


def test_results_with_big_integers_survive_and_nothing_escapes() -> None:
    pb = inline("workflow: [{step: start, tool: {kind: noop}, next: [b]}, {step: b, tool: {kind: noop}}]\n")
    first = start_execution(pb, execution_id=1, payload={}, catalog_path="t")
    second = apply_outcome(pb, first.state, outcome(first.commands[0], {"n": 2**70}))
    assert second.status == "RUNNING" and second.state.results["start"] == {"n": 2**70}
    broken = msgspec.structs.replace(second.state, results={"start": object()})
    decision = apply_outcome(pb, broken, outcome(second.commands[0], {}))
    assert decision.status == "FAILED" and decision.commands == []
    assert broken.status == "RUNNING"


def test_an_outcome_without_meta_is_matched_by_step() -> None:
    pb = inline("workflow: [{step: start, tool: {kind: noop}, next: [b]}, {step: b, tool: {kind: noop}}]\n")
    first = start_execution(pb, execution_id=1, payload={}, catalog_path="t")
    bare = CommandOutcome(command_id=1, step="start", status="completed", result={"ok": True})
    second = apply_outcome(pb, first.state, bare)
    assert [c.step for c in second.commands] == ["b"]
    assert apply_outcome(pb, second.state, bare).commands == []
