"""Upstream NoETL's canonical playbook form, beside the earlier one: parsed, validated and run
by the pure orchestrator (an in-test worker, no I/O)."""

from __future__ import annotations

import textwrap
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from noetl_common import ConfigError
from noetl_common.templating import TemplateError, TemplateLimits, render
from noetl_control_api import Settings
from noetl_control_api.dsl import Playbook, PlaybookError, parse_playbook
from noetl_control_api.orchestrator import (
    CommandDraft,
    CommandOutcome,
    Decision,
    EventDraft,
    apply_outcome,
    start_execution,
)
from noetl_dev.testing import repository_root

HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t, path: tests/t}\n"


def parse(body: str) -> Playbook:
    return parse_playbook(HEADER + textwrap.dedent(body))


def rejects(body: str, *, step: str | None, field: str, match: str) -> None:
    with pytest.raises(PlaybookError, match=match) as info:
        parse(body)
    assert (info.value.step, info.value.field) == (step, field)


class Run:
    """One execution driven to its end; ``worker`` answers each command with a result."""

    def __init__(
        self, pb: Playbook, worker: Callable[[CommandDraft], Any], payload: dict[str, Any] | None = None
    ) -> None:
        decision = start_execution(pb, execution_id=1, payload=payload or {}, catalog_path=pb.path)
        self.events: list[EventDraft] = list(decision.events)
        self.commands: list[CommandDraft] = list(decision.commands)
        self.most_in_flight = len(decision.commands)
        queue = deque(decision.commands)
        while queue:
            command = queue.popleft()
            reported = CommandOutcome(
                command_id=1, step=command.step, meta=command.meta, status="completed", result=worker(command)
            )
            decision = apply_outcome(pb, decision.state, reported)
            self.events.extend(decision.events)
            self.commands.extend(decision.commands)
            queue.extend(decision.commands)
            self.most_in_flight = max(self.most_in_flight, len(queue))
        self.final: Decision = decision

    def ran(self) -> list[str]:
        return [command.step for command in self.commands]


def echo(command: CommandDraft) -> Any:
    return {"step": command.step}


# -- executor.spec.entry_step / final_step ----------------------------------------------------------


def test_entry_step_replaces_start_and_defaults_to_the_first_step() -> None:
    pb = parse(
        """
        executor: {spec: {entry_step: begin}}
        workflow:
          - {step: start, tool: {kind: noop}}
          - {step: begin, tool: {kind: noop}, next: {arcs: [{step: done}]}}
          - {step: done, tool: {kind: noop}}
        """
    )
    assert pb.entry_step == "begin"
    run = Run(pb, echo)
    assert run.ran() == ["begin", "done"]
    assert run.final.status == "COMPLETED" and run.final.result == {"step": "done"}

    first = parse("workflow: [{step: a, tool: {kind: noop}, next: {arcs: [{step: b}]}}, {step: b}]\n")
    assert first.entry_step == "a" and Run(first, echo).ran() == ["a"]


def test_final_step_runs_once_when_nothing_else_is_left() -> None:
    pb = parse(
        """
        executor: {spec: {final_step: cleanup}}
        workflow:
          - step: start
            tool: {kind: noop}
            next: {spec: {mode: inclusive}, arcs: [{step: a}, {step: b}]}
          - {step: a, tool: {kind: noop}}
          - {step: b, tool: {kind: noop}}
          - {step: cleanup, tool: {kind: noop}}
        """
    )
    run = Run(pb, echo)
    assert run.ran() == ["start", "a", "b", "cleanup"]
    assert run.final.status == "COMPLETED" and run.final.result == {"step": "cleanup"}

    reached = parse(
        """
        executor: {spec: {final_step: cleanup}}
        workflow:
          - {step: start, tool: {kind: noop}, next: {arcs: [{step: cleanup}]}}
          - {step: cleanup, tool: {kind: noop}}
        """
    )
    assert Run(reached, echo).ran() == ["start", "cleanup"]  # reached by the flow: not run again

    with_end = parse(
        """
        executor: {spec: {final_step: cleanup}}
        workflow:
          - {step: start, tool: {kind: noop}}
          - {step: end, tool: {kind: noop}}
          - {step: cleanup, tool: {kind: noop}}
        """
    )
    # start continues to `end` implicitly; the final step does not (end would run twice)
    assert Run(with_end, echo).ran() == ["start", "end", "cleanup"]


def test_entry_and_final_steps_must_name_steps() -> None:
    for key in ("entry_step", "final_step"):
        rejects(
            f"executor: {{spec: {{{key}: nowhere}}}}\nworkflow: [{{step: start}}]\n",
            step=None,
            field=f"executor.spec.{key}",
            match="nowhere",
        )


# -- on_no_match -----------------------------------------------------------------------------------


ON_NO_MATCH = """
workflow:
  - step: start
    tool: {{kind: noop}}
    next: {{spec: {{mode: inclusive}}, arcs: [{{step: main}}, {{step: side}}]}}
  - step: side
    tool: {{kind: noop}}
    next: {{spec: {{on_no_match: {side}}}, arcs: [{{step: never, when: "{{{{ false }}}}"}}]}}
  - {{step: main, tool: {{kind: noop}}}}
  - {{step: never, tool: {{kind: noop}}}}
"""


@pytest.mark.parametrize(("mode", "result"), [("complete", "side"), ("quiet", "main")])
def test_on_no_match_quiet_ends_the_branch_without_being_the_runs_end(mode: str, result: str) -> None:
    pb = parse(ON_NO_MATCH.format(side=mode))
    routing = pb.step("side").next
    assert routing is not None and routing.on_no_match == mode

    # the in-test worker answers in issue order: main reports, then side dead-ends last
    run = Run(pb, echo)
    assert run.ran() == ["start", "main", "side"]
    assert run.final.status == "COMPLETED"
    assert run.final.result == {"step": result}


def test_on_no_match_quiet_keeps_the_earlier_result() -> None:
    pb = parse(
        """
        workflow:
          - {step: start, tool: {kind: noop}, next: {arcs: [{step: last}]}}
          - step: last
            tool: {kind: noop}
            next: {spec: {on_no_match: quiet}, arcs: [{step: start, when: "{{ false }}"}]}
        """
    )
    assert Run(pb, echo).final.result == {"step": "start"}
    loud = parse(
        """
        workflow:
          - {step: start, tool: {kind: noop}, next: {arcs: [{step: last}]}}
          - step: last
            tool: {kind: noop}
            next: {spec: {on_no_match: complete}, arcs: [{step: start, when: "{{ false }}"}]}
        """
    )
    assert Run(loud, echo).final.result == {"step": "last"}


def test_on_no_match_takes_complete_or_quiet() -> None:
    rejects(
        "workflow: [{step: start, next: {spec: {on_no_match: explode}, arcs: []}}]\n",
        step="start",
        field="next.spec.on_no_match",
        match="complete or quiet",
    )


# -- spec.policy.admit -------------------------------------------------------------------------------


def test_admit_rules_are_checked_and_every_step_is_admitted_as_upstream() -> None:
    pb = parse(
        """
        workflow:
          - step: start
            spec:
              policy:
                admit:
                  mode: exclusive
                  rules:
                    - when: "{{ workload.enabled }}"
                      then: {allow: true}
                    - else: {then: {allow: false}}
            tool: {kind: noop}
        """
    )
    rules = pb.step("start").admit
    assert [(r.when, r.allow) for r in rules] == [("{{ workload.enabled }}", True), (None, False)]
    assert Run(pb, echo, {"enabled": False}).ran() == ["start"]


@pytest.mark.parametrize(
    ("admit", "field", "match"),
    [
        ("[]", "spec.policy.admit", "mapping"),
        ("{mode: sometimes}", "spec.policy.admit.mode", "exclusive or inclusive"),
        ("{rules: {}}", "spec.policy.admit.rules", "list"),
        ("{rules: [{then: {allow: true}}]}", "spec.policy.admit.rules[0]", "when"),
        ("{rules: [{when: x, then: {do: continue}}]}", "spec.policy.admit.rules[0].then", "allow"),
        ("{rules: [{else: {then: {}}}]}", "spec.policy.admit.rules[0].else.then", "allow"),
        (
            "{rules: [{when: '{{ (', then: {allow: true}}]}",
            "spec.policy.admit.rules[0].when",
            "does not parse",
        ),
    ],
)
def test_bad_admit_rules_are_rejected_naming_the_step(admit: str, field: str, match: str) -> None:
    rejects(
        f"workflow: [{{step: start, spec: {{policy: {{admit: {admit}}}}}}}]\n",
        step="start",
        field=field,
        match=match,
    )


# -- backoff: none ---------------------------------------------------------------------------------


def test_backoff_none_is_taken_beside_the_earlier_fixed() -> None:
    pb = parse(
        """
        workflow:
          - step: start
            tool:
              kind: python
              code: "result = 1"
              spec: {policy: {rules: [{when: "{{ output.status == 'error' }}", then: {do: retry, backoff: none}}]}}
          - step: earlier
            tool: {kind: python, code: "result = 1", eval: [{expr: "{{ True }}", do: retry, backoff: fixed}]}
        """
    )
    assert pb.step("start").tasks[0].rules[0].backoff == "none"
    assert pb.step("earlier").tasks[0].rules[0].backoff == "fixed"
    rejects(
        "workflow: [{step: start, tool: {kind: noop, eval: [{do: retry, backoff: sometimes}]}}]\n",
        step="start",
        field="tool.eval[0].backoff",
        match="sometimes",
    )


# -- template filters ------------------------------------------------------------------------------


def test_codec_filters() -> None:
    names = {"text": "héllo", "doc": {"b": 1, "a": "<x>"}, "raw": '{"k": [1, 2]}'}
    assert render("{{ text | b64encode }}", names) == "aMOpbGxv"
    assert render("{{ 'aMOpbGxv' | b64decode }}", names) == "héllo"
    assert render("{{ 42 | b64encode }}", names) == "NDI="
    encoded = render("{{ doc | tojson }}", names)
    assert encoded == '{"a": "\\u003cx\\u003e", "b": 1}' and type(encoded) is str
    assert render("{{ raw | fromjson }}", names) == {"k": [1, 2]}
    assert render("{{ (raw | fromjson).k[1] }}", names) == 2
    assert render("{{ doc | tojson | fromjson }}", names) == {"a": "<x>", "b": 1}
    assert render("{{ doc | tojson | b64encode | b64decode | fromjson }}", names) == {"a": "<x>", "b": 1}


@pytest.mark.parametrize(
    ("template", "match"),
    [
        ("{{ '%%%' | b64decode }}", "b64decode: not base64"),
        ("{{ '/w==' | b64decode }}", "b64decode: not base64 of UTF-8"),
        ("{{ '{x' | fromjson }}", "fromjson: not JSON"),
        ("{{ (('[' * 200) ~ (']' * 200)) | fromjson }}", "deeper than 100"),
        ("{{ ('x' * 800000) | b64encode }}", "base64 text of 1066668 bytes would be larger"),
        ("{{ ('[' ~ ('1,' * 400000) ~ '1]') | fromjson }}", "iterations|larger"),
    ],
)
def test_codec_filters_fail_cleanly_within_the_budget(template: str, match: str) -> None:
    with pytest.raises(TemplateError, match=match):
        render(template, {}, TemplateLimits(max_output_bytes=1_000_000))


def test_filters_register_and_render_in_a_step() -> None:
    pb = parse(
        """
        workload: {user: ada, doc: '{"n": 2}'}
        workflow:
          - step: start
            tool:
              kind: http
              url: "http://example.test/"
              headers: {Authorization: "Basic {{ (user ~ ':x') | b64encode }}"}
            input: {n: "{{ (doc | fromjson).n }}", body: "{{ {'b': 2, 'a': 1} | tojson }}"}
        """
    )
    run = Run(pb, echo)
    spec = run.commands[0].spec
    assert spec.args == {"n": 2, "body": '{"a": 1, "b": 2}'}
    assert spec.tasks[0].config["headers"]["Authorization"] == "Basic {{ (user ~ ':x') | b64encode }}"
    assert render(spec.tasks[0].config["headers"], spec.context) == {"Authorization": "Basic YWRhOng="}


# -- templated max_in_flight -----------------------------------------------------------------------


def test_max_in_flight_may_be_a_template_rendered_when_the_loop_starts() -> None:
    pb = parse(
        """
        workload: {width: 2}
        workflow:
          - step: start
            loop: {in: "{{ [1, 2, 3, 4, 5] }}", iterator: n, spec: {mode: parallel, max_in_flight: "{{ width }}"}}
            tool: {kind: noop}
        """
    )
    loop = pb.step("start").loop
    assert loop is not None and loop.max_in_flight == "{{ width }}"
    first = start_execution(pb, execution_id=1, payload={}, catalog_path=pb.path)
    assert len(first.commands) == 2
    wide = start_execution(pb, execution_id=1, payload={"width": "4"}, catalog_path=pb.path)
    assert len(wide.commands) == 4
    run = Run(pb, echo)
    assert run.final.status == "COMPLETED" and len(run.final.result["results"]) == 5
    plain = parse(
        "workflow: [{step: start, loop: {in: [1], iterator: n, spec: {max_in_flight: '3'}}, tool: {kind: noop}}]\n"
    )
    assert plain.steps[0].loop is not None and plain.steps[0].loop.max_in_flight == 3


@pytest.mark.parametrize("width", [0, -1, "many", None, True])
def test_max_in_flight_that_renders_to_no_positive_integer_fails_the_step(width: Any) -> None:
    pb = parse(
        """
        workflow:
          - step: start
            loop: {in: [1, 2], iterator: n, spec: {mode: parallel, max_in_flight: "{{ width }}"}}
            tool: {kind: noop}
        """
    )
    decision = start_execution(pb, execution_id=1, payload={"width": width}, catalog_path=pb.path)
    assert decision.status == "FAILED" and decision.commands == []
    assert decision.error is not None and "max_in_flight must render to a positive integer" in decision.error


@pytest.mark.parametrize("raw", ["0", "many", "{{ (", "1.5", "false"])
def test_bad_max_in_flight_is_rejected_at_register(raw: str) -> None:
    with pytest.raises(PlaybookError) as info:
        parse(
            f"workflow: [{{step: start, loop: {{in: [1], iterator: n, spec: {{max_in_flight: {raw!r}}}}}, tool: {{kind: noop}}}}]\n"
        )
    assert info.value.step == "start" and info.value.field == "loop.spec.max_in_flight"


# -- unknown keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "step", "field", "match"),
    [
        (
            "owner: me\nworkflow: [{step: start}]\n",
            None,
            "owner",
            "unknown key 'owner'; the playbook root takes",
        ),
        (
            "workflow: [{step: start, case: []}]\n",
            "start",
            "case",
            "unknown key 'case'; route with next.arcs",
        ),
        (
            "workflow: [{step: start, tool: {kind: python, code: 'result = 1', retry: 3}}]\n",
            "start",
            "tool.retry",
            "unknown key 'retry'; retry a task with spec.policy.rules",
        ),
        (
            "workflow: [{step: start, tool: [{name: a, kind: noop, urll: x}]}]\n",
            "start",
            "tool[0].urll",
            "unknown key 'urll'",
        ),
        (
            "workflow: [{step: start, tool: [{a: {kind: http, url: x, verb: GET}}]}]\n",
            "start",
            "tool[0].a.verb",
            "unknown key 'verb'",
        ),
        (
            "workflow: [{step: start, next: {arcs: [{step: start, guard: x}]}}]\n",
            "start",
            "next[0].guard",
            "guard",
        ),
        ("workflow: [{step: start, next: [{step: start, guard: x}]}]\n", "start", "next[0].guard", "guard"),
        ("workflow: [{step: start, next: {spec: {mood: x}, arcs: []}}]\n", "start", "next.spec.mood", "mood"),
        (
            "workflow: [{step: start, spec: {policy: {lifecycle: {}}}}]\n",
            "start",
            "spec.policy.lifecycle",
            "admit",
        ),
        (
            "workflow: [{step: start, loop: {in: [1], iterator: i, spec: {speed: 2}}, tool: {kind: noop}}]\n",
            "start",
            "loop.spec.speed",
            "max_in_flight",
        ),
        (
            "workflow: [{step: start, tool: {kind: noop, spec: {policy: {rules: [{when: x, then: {do: retry, jitter: 1}}]}}}}]\n",
            "start",
            "tool.spec.policy.rules[0].then.jitter",
            "jitter",
        ),
        (
            "workflow: [{step: start, tool: {kind: noop, eval: [{expr: x, do: retry, jitter: 1}]}}]\n",
            "start",
            "tool.eval[0].jitter",
            "jitter",
        ),
        (
            "executor: {spec: {no_next_is_error: true}}\nworkflow: [{step: start}]\n",
            None,
            "executor.spec.no_next_is_error",
            "entry_step",
        ),
        (
            "workbook: [{name: w, tool: {kind: python, code: x, retry: 2}}]\nworkflow: [{step: start}]\n",
            None,
            "workbook[0].tool.retry",
            "retry",
        ),
    ],
)
def test_unknown_keys_are_refused_naming_the_step_and_the_key(
    body: str, step: str | None, field: str, match: str
) -> None:
    rejects(body, step=step, field=field, match=match)


def test_unknown_keys_under_warn_register_with_warnings() -> None:
    text = (
        HEADER + "workflow: [{step: start, case: [], tool: {kind: python, code: 'result = 1', retry: 3}}]\n"
    )
    pb = parse_playbook(text, unknown_keys="warn")
    assert pb.warnings == [
        "step 'start', field 'case': unknown key 'case'; route with next.arcs[].when and handle a task's "
        "outcome with spec.policy.rules",
        "step 'start', field 'tool.retry': unknown key 'retry'; retry a task with spec.policy.rules: "
        "[{when: ..., then: {do: retry, attempts, backoff, delay}}]",
    ]
    assert parse_playbook(text, unknown_keys="ignore").warnings == []


def test_both_forms_keep_every_key_they_take() -> None:
    current = parse(
        """
        executor: {profile: distributed, spec: {entry_step: start, final_step: done}}
        workload: {n: 1}
        workbook: [{name: w, desc: d, assert: {}, tool: {kind: python, code: "result = 1", libs: {}}}]
        workflow:
          - step: start
            desc: d
            spec: {timeout: 30s, policy: {admit: {mode: exclusive, rules: [{when: "{{ true }}", then: {allow: true}}]}}}
            input: {a: 1}
            loop: {in: [1], iterator: i, spec: {mode: parallel, max_in_flight: 2, policy: {exec: distributed}}}
            tool:
              - name: call
                kind: http
                url: http://x.test/
                method: GET
                headers: {}
                params: {}
                timeout: 5
                auth: api
                spec:
                  timeout: 10
                  policy:
                    rules:
                      - when: "{{ output.status == 'error' }}"
                        then: {do: retry, attempts: 3, backoff: none, delay: 1, set: {iter.k: 1}}
                      - else: {then: {do: continue}}
              - {name: w, kind: workbook}
            set: {ctx.done: true}
            next:
              spec: {mode: inclusive, on_no_match: quiet}
              arcs: [{step: done, when: "{{ true }}", set: {ctx.x: 1}}]
          - {step: done, tool: {kind: playbook, path: a/b, version: 1, return_step: x}}
        """
    )
    assert current.warnings == [] and current.final_step == "done"
    earlier = parse(
        """
        workflow:
          - step: start
            when: "{{ true }}"
            args: {a: 1}
            set_ctx: {k: 1}
            spec: {next_mode: exclusive}
            tool:
              kind: python
              code: "result = 1"
              eval:
                - {expr: "{{ outcome.status == 'error' }}", do: retry, attempts: 2, backoff: fixed, delay: 1}
                - else: {do: continue, set_vars: {v: 1}}
            next: [{step: end, when: "{{ true }}", args: {b: 2}, set_ctx: {c: 3}}]
          - step: end
        """
    )
    assert earlier.warnings == []


def test_the_unknown_key_setting_defaults_to_error() -> None:
    base = {"NOETL_DATABASE_URL": "postgresql://x/y"}
    assert Settings.from_env(base).dsl_unknown_keys == "error"
    assert Settings.from_env({**base, "NOETL_DSL_UNKNOWN_KEYS": "WARN"}).dsl_unknown_keys == "warn"
    with pytest.raises(ConfigError, match="NOETL_DSL_UNKNOWN_KEYS"):
        Settings.from_env({**base, "NOETL_DSL_UNKNOWN_KEYS": "ignore"})


REPOSITORY_PLAYBOOKS = [
    path
    for folder in (
        "examples",
        "system",
        "bench/playbooks",
        "tests/e2e/playbooks",
        "tests/conformance/playbooks",
    )
    for path in sorted((repository_root() / folder).glob("*.yaml"))
]


@pytest.mark.parametrize("path", REPOSITORY_PLAYBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_playbook_of_the_repository_registers_under_the_strict_check(path: Path) -> None:
    assert parse_playbook(path.read_text(), unknown_keys="error").warnings == []
