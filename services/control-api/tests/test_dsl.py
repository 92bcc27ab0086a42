"""DSL parsing: both syntax generations into one model, and register-time validation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from noetl_common import Rule
from noetl_control_api.dsl import Playbook, PlaybookError, parse_playbook
from noetl_dev.testing import conformance_dir

CONFORMANCE = conformance_dir()
HEADER = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: t, path: tests/t}\n"


def parse(body: str, header: str = HEADER) -> Playbook:
    return parse_playbook(header + textwrap.dedent(body))


def rejects(
    body: str, *, step: str | None, field: str | None, match: str, header: str = HEADER
) -> PlaybookError:
    with pytest.raises(PlaybookError, match=match) as info:
        parse(body, header)
    assert (info.value.step, info.value.field) == (step, field)
    if step is not None:
        assert repr(step) in str(info.value)
    if field is not None:
        assert repr(field) in str(info.value)
    return info.value


# -- current (v10) form -------------------------------------------------------------------


def test_current_form() -> None:
    pb = parse(
        """
        workload: {message: hi}
        workflow:
          - step: start
            tool:
              - name: fetch
                kind: http
                url: "{{ api }}"
                auth: {}
                spec:
                  timeout: 5
                  policy:
                    rules:
                      - when: "{{ output.status == 'error' }}"
                        then: {do: retry, attempts: 3, delay: 0.5, backoff: exponential}
                      - else:
                          then: {do: continue, set: {ctx.n: "{{ output.data.n }}"}}
              - name: shape
                kind: python
                input: {x: "{{ fetch.n }}"}
                code: "result = x"
            input: {api: "http://x"}
            set: {ctx.started: true}
            next:
              spec: {mode: inclusive}
              arcs:
                - step: end
                  when: "{{ start.ok }}"
                  set: {ctx.done: 1}
          - step: end
        """
    )
    assert pb.workload == {"message": "hi"}
    start = pb.step("start")
    assert [t.name for t in start.tasks] == ["fetch", "shape"]
    fetch, shape = start.tasks
    assert fetch.kind == "http"
    assert fetch.config == {"url": "{{ api }}", "auth": {}, "spec": {"timeout": 5}}
    assert fetch.rules == [
        Rule(do="retry", when="{{ output.status == 'error' }}", attempts=3, delay=0.5, backoff="exponential"),
        Rule(do="continue", set={"ctx.n": "{{ output.data.n }}"}),
    ]
    assert shape.config == {"code": "result = x", "args": {"x": "{{ fetch.n }}"}}
    assert start.args == {"api": "http://x"}
    assert start.set == {"ctx.started": True}
    assert start.next is not None and start.next.mode == "inclusive"
    assert start.next.arcs[0].when == "{{ start.ok }}"
    assert start.next.arcs[0].set == {"ctx.done": 1}
    assert not pb.step("end").has_tool and pb.step("end").next is None


def test_current_form_defaults_to_exclusive_and_accepts_else_without_then() -> None:
    pb = parse(
        """
        workflow:
          - step: start
            tool:
              kind: python
              code: x
              spec: {policy: {rules: [{else: {do: continue, set: {ctx.a: 1}}}, {when: true, then: {do: break}}]}}
            next: {arcs: [{step: end}, {step: other}]}
          - step: other
          - step: end
        """
    )
    start = pb.step("start")
    assert start.next is not None and start.next.mode == "exclusive"
    assert start.tasks[0].rules == [Rule(do="continue", set={"ctx.a": 1}), Rule(do="break")]
    assert start.tasks[0].config == {"code": "x"}


# -- earlier (Feb 2026) form ---------------------------------------------------------------


def test_earlier_form() -> None:
    pb = parse(
        """
        workload: {n: 1}
        workflow:
          - step: start
            when: "{{ workload.n > 0 }}"
            tool:
              - first:
                  kind: http
                  url: "{{ workload.u }}"
                  eval:
                    - expr: "{{ outcome.http.status in [500, 503] }}"
                      do: retry
                      attempts: 3
                    - expr: "{{ outcome.status == 'error' }}"
                      do: jump
                      to: second
                    - else:
                        do: continue
                        set_ctx: {total: "{{ outcome.result.n }}"}
                        set_vars: {seen: true}
                        set_iter: {page: 2}
              - second:
                  kind: python
                  args: {a: 1}
                  code: "result = a"
            args: {x: 1}
            set_ctx: {k: v}
            next:
              - step: a
                args: {y: "{{ workload.n }}"}
              - step: b
          - step: a
            next: end
          - step: b
            spec: {next_mode: exclusive}
            next: [end]
          - step: end
        """
    )
    start = pb.step("start")
    assert start.when == "{{ workload.n > 0 }}"
    assert [t.name for t in start.tasks] == ["first", "second"]
    assert start.tasks[0].rules == [
        Rule(do="retry", when="{{ outcome.http.status in [500, 503] }}", attempts=3),
        Rule(do="jump", when="{{ outcome.status == 'error' }}", to="second"),
        Rule(do="continue", set={"ctx.total": "{{ outcome.result.n }}", "vars.seen": True, "iter.page": 2}),
    ]
    assert start.tasks[1].config == {"code": "result = a", "args": {"a": 1}}
    assert start.args == {"x": 1}
    assert start.set == {"ctx.k": "v"}
    assert start.next is not None and start.next.mode == "inclusive"  # unguarded list
    assert start.next.arcs[0].args == {"y": "{{ workload.n }}"}
    a_next, b_next = pb.step("a").next, pb.step("b").next
    assert a_next is not None and [arc.step for arc in a_next.arcs] == ["end"]
    assert b_next is not None and b_next.mode == "exclusive"


def test_earlier_list_with_a_guard_defaults_to_exclusive() -> None:
    pb = parse(
        """
        workflow:
          - step: start
            next:
              - step: end
                when: "{{ 1 == 1 }}"
              - step: end
          - step: end
        """
    )
    assert pb.step("start").next is not None
    assert pb.step("start").next.mode == "exclusive"  # type: ignore[union-attr]


def test_workbook_task_is_inlined_with_caller_args_over_defaults() -> None:
    pb = parse(
        """
        workbook:
          - name: flag
            tool: {kind: python, auth: {}, args: {t: null, keep: 1}, code: "result = t"}
            assert: {expects: [t]}
        workflow:
          - step: start
            tool: {kind: workbook, name: flag, args: {t: "{{ workload.t }}"}}
        """
    )
    (task,) = pb.step("start").tasks
    assert task.kind == "python"
    assert task.name == "start"
    assert task.config == {
        "auth": {},
        "code": "result = t",
        "workbook": "flag",
        "args": {"t": "{{ workload.t }}", "keep": 1},
    }


def test_loop_model() -> None:
    pb = parse(
        """
        workflow:
          - step: start
            loop: {in: "{{ workload.xs }}", iterator: x, spec: {mode: parallel, max_in_flight: 2}}
            tool: {kind: noop}
        """
    )
    loop = pb.step("start").loop
    assert loop is not None
    assert (loop.items, loop.iterator, loop.mode, loop.max_in_flight) == (
        "{{ workload.xs }}",
        "x",
        "parallel",
        2,
    )


# -- validation ----------------------------------------------------------------------------


def test_malformed_yaml() -> None:
    with pytest.raises(PlaybookError, match="malformed YAML"):
        parse_playbook("a: [1, 2")
    with pytest.raises(PlaybookError, match="mapping"):
        parse_playbook("- 1")


def test_v1_documents_are_rejected_with_the_v2_form() -> None:
    with pytest.raises(PlaybookError) as info:
        parse_playbook("apiVersion: noetl.io/v1\nkind: Playbook\nname: x\nworkflow: []\n")
    assert info.value.field == "apiVersion"
    assert "apiVersion: noetl.io/v2" in str(info.value)
    assert "arcs:" in str(info.value)


def test_v1_step_type_is_rejected() -> None:
    rejects("workflow:\n  - step: start\n    type: python\n", step="start", field="type", match="v1")


def test_header_and_metadata() -> None:
    rejects(
        "workflow: [{step: start}]\n",
        header="apiVersion: x/v3\nkind: Playbook\n",
        step=None,
        field="apiVersion",
        match="noetl.io/v2",
    )
    rejects(
        "workflow: [{step: start}]\n",
        header="apiVersion: noetl.io/v2\nkind: Job\n",
        step=None,
        field="kind",
        match="Playbook",
    )
    rejects(
        "workflow: [{step: start}]\n",
        header="apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: x}\n",
        step=None,
        field="metadata.path",
        match="required",
    )


def test_root_vars_rejected() -> None:
    rejects("vars: {a: 1}\nworkflow: [{step: start}]\n", step=None, field="vars", match="vars")


def test_duplicate_steps() -> None:
    rejects("workflow: [{step: start}, {step: start}]\n", step="start", field="step", match="duplicate")


def test_without_start_the_first_step_is_the_entry() -> None:
    assert parse("workflow: [{step: begin}, {step: start}]\n").entry_step == "start"
    assert parse("workflow: [{step: begin}, {step: other}]\n").entry_step == "begin"


def test_arc_to_missing_step() -> None:
    rejects(
        "workflow: [{step: start, next: {arcs: [{step: nowhere}]}}]\n",
        step="start",
        field="next[0].step",
        match="nowhere",
    )


def test_loop_without_in_or_iterator() -> None:
    rejects(
        "workflow: [{step: start, loop: {iterator: x}, tool: {kind: noop}}]\n",
        step="start",
        field="loop.in",
        match="in",
    )
    rejects(
        "workflow: [{step: start, loop: {in: [1]}, tool: {kind: noop}}]\n",
        step="start",
        field="loop.iterator",
        match="iterator",
    )


def test_unknown_tool_kind() -> None:
    rejects(
        "workflow: [{step: start, tool: {kind: teleport}}]\n",
        step="start",
        field="tool.start.kind",
        match="teleport",
    )


def test_system_kinds_and_capabilities_need_a_system_path() -> None:
    rejects(
        "workflow: [{step: start, tool: {kind: system_auth}}]\n",
        step="start",
        field="tool.start.kind",
        match="system/",
    )
    rejects(
        "executor: {runtime: wasm, capabilities: [object_put]}\nworkflow: [{step: start}]\n",
        step=None,
        field="executor.capabilities",
        match="object_put",
    )
    system = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: s, path: system/s}\n"
    pb = parse(
        "executor: {runtime: wasm, capabilities: [object_put]}\nworkflow: [{step: start, tool: {kind: system_auth}}]\n",
        header=system,
    )
    assert pb.step("start").tasks[0].kind == "system_auth"


def test_template_that_does_not_parse() -> None:
    rejects(
        "workflow: [{step: start, tool: {kind: http, url: '{{ a + }}'}}]\n",
        step="start",
        field="tool.start.url",
        match="parse",
    )
    rejects(
        "workflow: [{step: start, next: [{step: start, when: 'a ==='}]}]\n",
        step="start",
        field="next[0].when",
        match="parse",
    )


def test_python_code_braces_are_not_templates() -> None:
    pb = parse("workflow: [{step: start, tool: {kind: python, code: 'print(\"{{ not valid +\")'}}]\n")
    assert pb.step("start").tasks[0].kind == "python"


def test_rule_validation() -> None:
    rejects(
        "workflow: [{step: start, tool: {kind: http, eval: [{expr: x, do: explode}]}}]\n",
        step="start",
        field="tool.eval[0].do",
        match="explode",
    )
    rejects(
        "workflow: [{step: start, tool: [{name: a, kind: noop, eval: [{expr: x, do: jump, to: zz}]}]}]\n",
        step="start",
        field="tool.a.rules",
        match="zz",
    )
    rejects(
        "workflow: [{step: start, set: {workload.x: 1}}]\n",
        step="start",
        field="set.workload.x",
        match="writable",
    )


def test_workbook_reference_must_exist() -> None:
    rejects(
        "workflow: [{step: start, tool: {kind: workbook, name: nope}}]\n",
        step="start",
        field="tool.name",
        match="nope",
    )


def test_bad_next_shape() -> None:
    rejects("workflow: [{step: start, next: 5}]\n", step="start", field="next", match="next must be")
    rejects(
        "workflow: [{step: start, next: {spec: {mode: all}, arcs: []}}]\n",
        step="start",
        field="next.spec.mode",
        match="all",
    )


# -- the conformance playbooks ---------------------------------------------------------------


def _conformance_files() -> list[Path]:
    return sorted(CONFORMANCE.glob("upstream/*.yaml")) + sorted(CONFORMANCE.glob("e2e-fixtures/*.yaml"))


@pytest.mark.parametrize("path", _conformance_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_conformance_playbook_parses(path: Path) -> None:
    text = path.read_text()
    if path.name == "c2_heavy_loop_aggregation.yaml":
        with pytest.raises(PlaybookError) as info:
            parse_playbook(text)
        assert info.value.field == "vars" and "vars" in str(info.value)
        return
    pb = parse_playbook(text)
    assert pb.step("start").name == "start"
    assert all(task.kind != "workbook" for step in pb.steps for task in step.tasks)


def test_admission_policy_is_read_and_checked() -> None:
    assert parse("workflow: [{step: start, spec: {policy: {admit: {rules: []}}}}]\n").steps[0].admit == []
    rejects(
        "workflow: [{step: start, spec: {policy: {admit: {rules: [{when: x}]}}}}]\n",
        step="start",
        field="spec.policy.admit.rules[0].then",
        match="allow",
    )


def test_reserved_names_and_tool_less_loops() -> None:
    rejects(
        "workflow: [{step: start, next: [ctx]}, {step: ctx}]\n", step="ctx", field="step", match="reserved"
    )
    rejects(
        "workflow: [{step: start, loop: {in: [1], iterator: workload}, tool: {kind: noop}}]\n",
        step="start",
        field="loop.iterator",
        match="reserved",
    )
    rejects(
        "workflow: [{step: start, loop: {in: [1], iterator: x}}]\n", step="start", field="loop", match="tool"
    )


def test_alias_bombs_and_deep_nesting_are_rejected() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 9)
    ]
    bomb = HEADER + "workload:\n" + "\n".join("  " + line for line in lines) + "\nworkflow: [{step: start}]\n"
    with pytest.raises(PlaybookError, match="YAML nodes"):
        parse_playbook(bomb)
    deep = HEADER + "workload: " + "[" * 150 + "]" * 150 + "\nworkflow: [{step: start}]\n"
    with pytest.raises(PlaybookError, match="deeper"):
        parse_playbook(deep)


def test_yaml_anchors_within_limits_are_fine() -> None:
    pb = parse(
        """
        workload:
          defaults: &d {retries: 3}
          job: {<<: *d, name: x}
        workflow: [{step: start}]
        """
    )
    assert pb.workload["job"] == {"retries": 3, "name": "x"}


def test_unnamed_pipeline_items_get_upstream_synthetic_labels() -> None:
    pb = parse("workflow: [{step: start, tool: [{kind: noop}, {kind: noop}]}]\n")
    assert [t.name for t in pb.step("start").tasks] == ["task_0", "task_1"]


def test_wasm_opt_ins_lower_to_one_task_shape() -> None:
    pb = parse(
        "executor: {runtime: wasm, plugin: {path: acme/echo, version: 2}, capabilities: [event_publish]}\n"
        "workflow: [{step: start, tool: {kind: wasm, format: arrow-ipc}},"
        " {step: other, tool: {kind: wasm, plugin: {path: acme/own}, capabilities: []}}]\n"
    )
    start, other = pb.step("start").tasks[0], pb.step("other").tasks[0]
    assert start.config["plugin"] == {"path": "acme/echo", "version": 2}
    assert start.config["capabilities"] == ["event_publish"]
    assert other.config["plugin"] == {"path": "acme/own"} and other.config["capabilities"] == []
    rejects(
        "workflow: [{step: start, tool: {kind: wasm}}]\n",
        step="start",
        field="tool.start.plugin",
        match="plugin",
    )


def test_user_wasm_task_asking_for_system_capabilities_is_rejected() -> None:
    rejects(
        "workflow: [{step: start, tool: {kind: wasm, plugin: {path: system/materialiser}, capabilities: [object_put]}}]\n",
        step="start",
        field="tool.start.capabilities",
        match="reserved for system/",
    )


def test_unknown_capabilities_are_rejected_even_for_system_playbooks() -> None:
    system = "apiVersion: noetl.io/v2\nkind: Playbook\nmetadata: {name: s, path: system/s}\n"
    with pytest.raises(PlaybookError, match="unknown capabilities") as caught:
        parse(
            "workflow: [{step: start, tool: {kind: wasm, plugin: {path: system/echo}, capabilities: [fs_write]}}]\n",
            header=system,
        )
    assert (caught.value.step, caught.value.field) == ("start", "tool.start.capabilities")


@pytest.mark.parametrize(
    ("raw", "seconds"), [("2", 2.0), ("0.5", 0.5), ("'500ms'", 0.5), ("'30s'", 30.0), ("'2m'", 120.0)]
)
def test_step_timeout_in_seconds(raw: str, seconds: float) -> None:
    playbook = parse(
        f"""
        workflow:
          - step: start
            timeout: {raw}
            tool: {{kind: noop}}
          - step: other
            spec: {{timeout: 3}}
            tool: {{kind: noop}}
        """
    )
    assert playbook.step("start").timeout == seconds
    assert playbook.step("other").timeout == 3.0


@pytest.mark.parametrize("raw", ["0", "-1", "'soon'", "true", "'9999999s'"])
def test_a_bad_step_timeout_is_rejected_naming_the_step(raw: str) -> None:
    rejects(
        f"""
        workflow:
          - step: start
            timeout: {raw}
            tool: {{kind: noop}}
        """,
        step="start",
        field="timeout",
        match="timeout must be",
    )


@pytest.mark.parametrize(("raw", "seconds"), [(None, None), ("90", 90.0), ("'1h'", 3600.0), ("'8000h'", 8000 * 3600.0)])
def test_a_playbook_timeout_bounds_each_execution(raw: str | None, seconds: float | None) -> None:
    line = "" if raw is None else f"timeout: {raw}\n"
    playbook = parse(line + "workflow: [{step: start, tool: {kind: noop}, timeout: 5}]\n")
    assert playbook.timeout == seconds
    assert playbook.step("start").timeout == 5.0  # the step's own bound is another thing


@pytest.mark.parametrize("raw", ["0", "-3", "'later'", "false", "'9000h'", ".nan", "[1]"])
def test_a_bad_playbook_timeout_is_rejected(raw: str) -> None:
    rejects(
        f"timeout: {raw}\nworkflow: [{{step: start, tool: {{kind: noop}}}}]\n",
        step=None,
        field="timeout",
        match="timeout must be a positive number of seconds .* under 366 days",
    )


def test_current_form_arcs_route_errors_and_the_earlier_form_does_not() -> None:
    playbook = parse(
        """
        workflow:
          - step: start
            tool: {kind: noop}
            next: {spec: {mode: exclusive}, arcs: [{step: b}]}
          - step: b
            tool: {kind: noop}
            next: [{step: end}]
          - step: end
        """
    )
    assert playbook.step("start").next.after_error is True  # type: ignore[union-attr]
    assert playbook.step("b").next.after_error is False  # type: ignore[union-attr]


def test_tool_output_select_and_store_are_checked_at_register_time() -> None:
    good = parse(
        """
        workflow:
          - step: start
            tool:
              kind: http
              url: http://x
              output: {select: [data.id, {path: "$.data.next", as: cursor}], store: {kind: kv}}
          - step: w
            tool: {kind: wasm, plugin: {path: p}, output: arrow-ipc}
        """
    )
    assert good.step("start").tasks[0].config["output"]["store"] == {"kind": "kv"}
    assert good.step("w").tasks[0].config["output"] == "arrow-ipc"
    rejects(
        "workflow:\n  - step: start\n    tool: {kind: noop, output: {select: data.id}}\n",
        step="start",
        field="tool.output.select",
        match="a list of at most 100 paths",
    )
    rejects(
        "workflow:\n  - step: start\n    tool: [{name: a, kind: noop, output: {select: [{as: x}]}}]\n",
        step="start",
        field="tool[0].output.select[0]",
        match="a path or",
    )
    rejects(
        "workflow:\n  - step: start\n    tool: {kind: noop, output: {store: {kind: tape}}}\n",
        step="start",
        field="tool.output.store",
        match="kind is one of",
    )


def test_http_pagination_policies_are_checked_at_register_time() -> None:
    good = parse(
        """
        workflow:
          - step: start
            tool:
              kind: http
              url: http://x
              retry:
                - when: "{{ response.paging.hasMore }}"
                  then: {max_attempts: 10, next_call: {params: {page: "{{ response.paging.page + 1 }}"}}, collect: {path: data}}
        """
    )
    assert good.step("start").tasks[0].config["retry"][0]["then"]["max_attempts"] == 10
    rejects(
        "workflow:\n  - step: start\n    tool: {kind: http, url: x, retry: [{then: {collect: {}}}]}\n",
        step="start",
        field="tool.retry[0]",
        match="a retry policy is",
    )
    rejects(
        "workflow:\n  - step: start\n    tool: {kind: http, url: x, retry: [{when: a, then: {max_attempts: 5000, collect: {}}}]}\n",
        step="start",
        field="tool.retry[0].then",
        match="1..1000",
    )
    rejects(
        "workflow:\n  - step: start\n    tool: {kind: http, url: x, retry: [{when: a, then: {collect: {strategy: zip}}}]}\n",
        step="start",
        field="tool.retry[0].then.collect.strategy",
        match="append, merge, replace",
    )
    rejects(
        "workflow:\n  - step: start\n    tool: {kind: http, url: x, retry: [{when: '{{ a +', then: {collect: {}}}]}\n",
        step="start",
        field="tool.start.retry[0].when",
        match="does not parse",
    )
