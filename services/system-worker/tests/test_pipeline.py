"""Pipeline runner: python conventions, rules, set patches, template native types."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from noetl_common import CommandSpec, Rule, TaskSpec
from noetl_common.templating import TemplateLimits
from noetl_system_worker import PipelineRunner, backoff_delay, default_registry, execute_python


class RecordingSleep:
    """Stands in for asyncio.sleep in retry backoff, recording the delays asked for."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def py(name: str, code: str, rules: list[Rule] | None = None, **config: Any) -> TaskSpec:
    return TaskSpec(name=name, kind="python", config={"code": code, **config}, rules=rules or [])


async def run(
    *tasks: TaskSpec, args: dict[str, Any] | None = None, context: dict[str, Any] | None = None, sleep=None
):
    runner = PipelineRunner(default_registry(), sleep=sleep or RecordingSleep())
    return await runner.run(CommandSpec(tasks=list(tasks), args=args or {}, context=context or {}))


# -- python tool conventions (C2) ---------------------------------------------------------


def test_inputs_are_globals_and_input_data() -> None:
    out = execute_python(
        "result = {'a': a, 'b': input_data['b'], 'keys': sorted(input_data)}", {"a": 1, "b": 2}
    )
    assert out == {"a": 1, "b": 2, "keys": ["a", "b"]}


def test_input_literally_named_input_data_wins() -> None:
    out = execute_python("result = input_data", {"input_data": {"mine": True}, "x": 1})
    assert out == {"mine": True}


def test_top_level_return_is_the_output() -> None:
    code = (
        "rows = input_data.get('rows', [])\nif rows:\n    return {'n': len(rows), 'a': a}\nreturn {'n': 0}\n"
    )
    assert execute_python(code, {"rows": [1, 2], "a": 3}) == {"n": 2, "a": 3}
    assert execute_python(code, {"a": 3}) == {"n": 0}
    with pytest.raises(SyntaxError):
        execute_python("return (", {})


def test_main_called_with_the_inputs_it_accepts() -> None:
    code = "def main(a, c=5):\n    return {'a': a, 'c': c}\n"
    assert execute_python(code, {"a": 1, "b": 2}) == {"a": 1, "c": 5}


def test_main_without_parameters_and_with_kwargs() -> None:
    assert execute_python("def main():\n    return {'ok': True}\n", {"x": 1}) == {"ok": True}
    assert execute_python("def main(**kw):\n    return kw\n", {"x": 1, "y": 2}) == {"x": 1, "y": 2}


def test_main_may_ask_for_input_data() -> None:
    assert execute_python("def main(input_data):\n    return input_data\n", {"x": 1}) == {"x": 1}


def test_no_result_global_gives_none() -> None:
    assert execute_python("x = 1", {}) is None


async def test_python_exception_becomes_step_error_with_message_and_type() -> None:
    outcome = await run(py("boom", "raise ValueError('bad input 42')"))
    assert outcome.status == "failed"
    assert outcome.error == {
        "message": "bad input 42",
        "type": "ValueError",
        "task": "boom",
        "kind": "tool_error",
        "retryable": False,
        "code": None,
    }


async def test_sys_exit_in_task_code_fails_the_task_only() -> None:
    outcome = await run(py("quit", "import sys\nsys.exit(3)"))
    assert outcome.status == "failed"
    assert outcome.error is not None and outcome.error["type"] == "SystemExit"


async def test_syntax_error_is_a_task_error() -> None:
    outcome = await run(py("t", "result = (1,"))
    assert outcome.status == "failed" and outcome.error["type"] == "SyntaxError"


async def test_code_b64_is_accepted() -> None:
    encoded = base64.b64encode(b"result = {'via': 'b64'}").decode()
    task = TaskSpec(name="t", kind="python", config={"code_b64": encoded})
    assert (await run(task)).result == {"via": "b64"}


async def test_missing_code_fails_clearly() -> None:
    outcome = await run(TaskSpec(name="t", kind="python", config={}))
    assert outcome.status == "failed" and "no code" in outcome.error["message"]


# -- templates, inputs, locals --------------------------------------------------------------


async def test_single_expression_keeps_native_type() -> None:
    code = "assert test_var == 100, repr(test_var)\nassert items == [1, 2]\nresult = test_var + computed"
    task = py(
        "compute",
        code,
        args={"test_var": "{{ args.test_var }}", "computed": 200, "items": "{{ workload.items }}"},
    )
    outcome = await run(task, args={"test_var": 100}, context={"workload": {"items": [1, 2]}})
    assert outcome.status == "completed", outcome.error
    assert outcome.result == 300


async def test_v10_input_key_and_step_args_feed_the_task() -> None:
    task = py("t", "result = {'m': message, 'n': n}", input={"n": "{{ 1 + 1 }}"})
    outcome = await run(task, args={"message": "hello"})
    assert outcome.result == {"m": "hello", "n": 2}


async def test_null_task_inputs_are_defaults_that_step_args_fill() -> None:
    task = py("t", "result = {'t': temperature_c, 'u': unit}", args={"temperature_c": None, "unit": None})
    outcome = await run(task, args={"temperature_c": 30})
    assert outcome.result == {"t": 30, "u": None}


async def test_pipeline_locals_and_earlier_results_by_name() -> None:
    first = py("first", "result = {'n': 1}")
    second = py(
        "second",
        "result = {'prev': prev, 'task': task, 'attempt': attempt, 'first': first_n}",
        args={
            "prev": "{{ _prev }}",
            "task": "{{ _task }}",
            "attempt": "{{ _attempt }}",
            "first_n": "{{ first.n }}",
        },
    )
    outcome = await run(first, second)
    assert outcome.result == {"prev": {"n": 1}, "task": "second", "attempt": 1, "first": 1}


async def test_template_error_fails_before_the_tool_runs() -> None:
    outcome = await run(py("t", "result = 1", args={"x": "{{ nosuchname.x }}"}))
    assert outcome.status == "failed"
    assert outcome.error["type"] == "TemplateError" and "nosuchname" in outcome.error["message"]
    assert outcome.error["task"] == "t"


async def test_a_template_bomb_in_a_task_config_fails_the_task_naming_step_task_and_field() -> None:
    ran: list[dict[str, Any]] = []

    async def record(config: dict[str, Any], inputs: dict[str, Any], context: Any) -> Any:
        ran.append(config)
        return {"ok": True}

    registry = default_registry()
    registry.register("recorder", record)
    bomb = "{% for a in rows %}{% for b in rows %}{% endfor %}{% endfor %}"
    tasks = [
        TaskSpec(name="first", kind="recorder", config={"url": "https://example.test/a"}),
        TaskSpec(name="fetch", kind="recorder", config={"headers": {"x-trace": bomb}, "url": "u"}),
    ]
    runner = PipelineRunner(registry, sleep=RecordingSleep(), limits=TemplateLimits(max_seconds=3600.0))
    spec = CommandSpec(tasks=tasks, context={"rows": list(range(10_000))})
    outcome = await runner.run(spec, step="load")
    assert outcome.status == "failed" and outcome.task == "fetch"
    assert ran == [{"url": "https://example.test/a"}]  # the tool of the bomb's task never ran
    assert outcome.error is not None
    assert outcome.error["type"] == "TemplateBudgetError" and outcome.error["task"] == "fetch"
    message = outcome.error["message"]
    assert message.startswith("step 'load' task 'fetch': config.headers.x-trace: template ")
    assert "more than 100000 loop iterations (NOETL_TEMPLATE_MAX_ITERATIONS)" in message


async def test_a_template_bomb_in_a_rule_names_the_rule() -> None:
    when = Rule(when="{{ '%999999999999d' % 1 }}", do="continue")
    outcome = await run(py("t", "result = 1", [when]))
    assert outcome.status == "failed" and outcome.error["type"] == "TemplateBudgetError"
    assert outcome.error["message"].startswith("task 't': rules[0].when: template ")
    assert "NOETL_TEMPLATE_MAX_OUTPUT_BYTES" in outcome.error["message"]
    writes = [Rule(when="{{ false }}", do="fail"), Rule(do="continue", set={"ctx.n": "{{ 10 ** 9999 }}"})]
    outcome = await run(py("t", "result = 1", writes))
    assert outcome.error["message"].startswith("task 't': rules[1].set.ctx.n: template ")
    assert "NOETL_TEMPLATE_MAX_INT_BITS" in outcome.error["message"]


async def test_unknown_kind_fails_naming_the_kind() -> None:
    outcome = await run(TaskSpec(name="w", kind="warp_drive"))
    assert outcome.status == "failed"
    assert "warp_drive" in outcome.error["message"] and outcome.error["type"] == "UnknownToolError"


async def test_noop_returns_args_or_none() -> None:
    assert (await run(TaskSpec(name="n", kind="noop"))).result is None
    assert (await run(TaskSpec(name="n", kind="noop"), args={"a": 1})).result == {"a": 1}


# -- rules -----------------------------------------------------------------------------------


async def test_no_rules_error_fails_and_stops_the_pipeline() -> None:
    outcome = await run(py("a", "raise RuntimeError('x')"), py("b", "result = 'never'"))
    assert outcome.status == "failed" and outcome.task == "a" and outcome.task_runs == 1


async def test_step_result_is_last_task_result() -> None:
    outcome = await run(py("a", "result = 1"), py("b", "result = 2"))
    assert outcome.status == "completed" and outcome.result == 2


class Flaky:
    """A tool that raises until its ``fail_until``-th call, counting calls."""

    def __init__(self, fail_until: int) -> None:
        self.fail_until = fail_until
        self.calls = 0

    async def __call__(self, config: dict[str, Any], args: dict[str, Any], ctx: Any) -> Any:
        self.calls += 1
        if self.calls < self.fail_until:
            raise ConnectionError(f"try {self.calls}")
        return {"calls": self.calls, "attempt": config["attempt"]}


async def run_flaky(fail_until: int, rules: list[Rule], sleep: RecordingSleep) -> tuple[Any, Flaky]:
    tool = Flaky(fail_until)
    registry = default_registry()
    registry.register("flaky", tool)
    task = TaskSpec(name="flaky", kind="flaky", config={"attempt": "{{ _attempt }}"}, rules=rules)
    outcome = await PipelineRunner(registry, sleep=sleep).run(CommandSpec(tasks=[task]))
    return outcome, tool


async def test_retry_until_success_with_exponential_backoff() -> None:
    rules = [
        Rule(when="{{ outcome.status == 'error' }}", do="retry", attempts=5, backoff="exponential", delay=0.5)
    ]
    sleep = RecordingSleep()
    outcome, tool = await run_flaky(3, rules, sleep)
    assert outcome.status == "completed", outcome.error
    assert outcome.result == {"calls": 3, "attempt": 3}
    assert sleep.delays == [0.5, 1.0]
    assert tool.calls == 3


async def test_retry_attempts_count_total_tries_then_fail() -> None:
    rules = [Rule(when="{{ output.status == 'error' }}", do="retry", attempts=3, backoff="linear", delay=1)]
    sleep = RecordingSleep()
    outcome, tool = await run_flaky(99, rules, sleep)
    assert outcome.status == "failed"
    assert tool.calls == 3
    assert sleep.delays == [1.0, 2.0]
    assert "retries exhausted after 3" in outcome.error["message"] and "try 3" in outcome.error["message"]
    assert outcome.error["type"] == "ConnectionError"


class Stalls:
    """A tool whose first ``stalls`` calls never finish (until cancelled); later calls answer."""

    def __init__(self, stalls: int) -> None:
        self.stalls = stalls
        self.calls = 0
        self.cancelled = 0

    async def __call__(self, config: dict[str, Any], args: dict[str, Any], ctx: Any) -> Any:
        self.calls += 1
        if self.calls <= self.stalls:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        return {"calls": self.calls}


async def test_task_spec_timeout_is_an_error_outcome_rules_can_retry() -> None:
    tool = Stalls(stalls=2)
    registry = default_registry()
    registry.register("stalls", tool)
    retry = [Rule(when="{{ output.error.type == 'TimeoutError' }}", do="retry", attempts=3, delay=0)]
    task = TaskSpec(name="slow", kind="stalls", config={"spec": {"timeout": 0.05}}, rules=retry)
    outcome = await PipelineRunner(registry, sleep=RecordingSleep()).run(CommandSpec(tasks=[task]))
    assert outcome.status == "completed" and outcome.result == {"calls": 3}
    assert tool.cancelled == 2  # each stalled call was cut at its bound

    tool.calls = 0  # without rules the first stalled call fails the step; the next task never runs
    once = TaskSpec(name="slow", kind="stalls", config={"spec": {"timeout": 0.05}})
    failed = await PipelineRunner(registry, sleep=RecordingSleep()).run(
        CommandSpec(tasks=[once, py("after", "result = 1")])
    )
    assert failed.status == "failed" and failed.error is not None
    assert failed.error["message"] == "task 'slow' timed out after 0.05 s"
    assert failed.error["type"] == "TimeoutError" and failed.error["task"] == "slow"


def test_backoff_modes() -> None:
    assert [backoff_delay(Rule(do="retry", delay=2, backoff="fixed"), n) for n in (1, 2, 3)] == [2, 2, 2]
    assert [backoff_delay(Rule(do="retry", delay=2, backoff="linear"), n) for n in (1, 2, 3)] == [2, 4, 6]
    assert [backoff_delay(Rule(do="retry", delay=2, backoff="exponential"), n) for n in (1, 2, 3)] == [
        2,
        4,
        8,
    ]
    assert backoff_delay(Rule(do="retry", delay=100, backoff="exponential"), 10) == 300


async def test_backoff_none_retries_at_once_whatever_the_delay() -> None:
    assert [backoff_delay(Rule(do="retry", delay=5, backoff="none"), n) for n in (1, 2, 3)] == [0, 0, 0]
    rules = [Rule(when="{{ output.status == 'error' }}", do="retry", attempts=4, backoff="none", delay=5)]
    sleep = RecordingSleep()
    outcome, tool = await run_flaky(3, rules, sleep)
    assert outcome.status == "completed", outcome.error
    assert tool.calls == 3
    assert sleep.delays == [0.0, 0.0]


async def test_rule_fail_on_success_fails_the_step() -> None:
    task = py(
        "check",
        "result = {'ok': False}",
        [Rule(when="{{ not output.data.ok }}", do="fail"), Rule(do="continue")],
    )
    outcome = await run(task, py("after", "result = 'never'"))
    assert outcome.status == "failed" and outcome.task == "check"
    assert "failed by rule" in outcome.error["message"]


async def test_error_with_continue_rule_moves_on() -> None:
    task = py("a", "raise KeyError('k')", [Rule(when="{{ output.status == 'error' }}", do="continue")])
    outcome = await run(task, py("b", "result = {'prev': prev}", args={"prev": "{{ _prev }}"}))
    assert outcome.status == "completed" and outcome.result == {"prev": None}


async def test_break_ends_the_step_successfully_with_its_result() -> None:
    task = py("a", "result = {'stop': True}", [Rule(when="{{ output.data.stop }}", do="break")])
    outcome = await run(task, py("b", "result = 'never'"))
    assert outcome.status == "completed" and outcome.result == {"stop": True} and outcome.task == "a"


async def test_jump_loops_back_with_set_patches_visible() -> None:
    page = py(
        "fetch",
        "result = {'page': page, 'more': page < 3}",
        args={"page": "{{ iter.page | default(1) }}"},
    )
    advance = py(
        "advance",
        "result = {'seen': prev['page']}",
        [
            Rule(
                when="{{ _prev.more }}",
                do="jump",
                to="fetch",
                set={"iter.page": "{{ output.data.seen + 1 }}"},
            ),
            Rule(do="continue", set={"ctx.pages": "{{ output.data.seen }}"}),
        ],
        args={"prev": "{{ _prev }}"},
    )
    outcome = await run(page, advance, context={"iter": {}, "ctx": {}})
    assert outcome.status == "completed", outcome.error
    assert outcome.result == {"seen": 3}
    assert outcome.set == {"iter.page": 3, "ctx.pages": 3}
    assert outcome.task_runs == 6


async def test_jump_to_unknown_task_fails() -> None:
    outcome = await run(py("a", "result = 1", [Rule(do="jump", to="nowhere")]))
    assert outcome.status == "failed" and "nowhere" in outcome.error["message"]


async def test_runaway_jump_cycle_is_bounded() -> None:
    runner = PipelineRunner(default_registry(), sleep=RecordingSleep(), max_task_runs=20)
    spec = CommandSpec(tasks=[TaskSpec(name="a", kind="noop", rules=[Rule(do="jump", to="a")])])
    outcome = await runner.run(spec)
    assert outcome.status == "failed" and (outcome.error or {})["type"] == "PipelineLimitError"


async def test_set_values_keep_native_types_and_read_output() -> None:
    task = py(
        "t",
        "result = {'counter': 0, 'config': {'timeout': 30}}",
        [Rule(set={"ctx.counter": "{{ output.data.counter }}", "ctx.config": "{{ output.data.config }}"})],
    )
    outcome = await run(task, context={"ctx": {"other": 1}})
    assert outcome.status == "completed"
    assert outcome.set == {"ctx.counter": 0, "ctx.config": {"timeout": 30}}


async def test_first_matching_rule_wins_and_else_catches_the_rest() -> None:
    rules = [
        Rule(when="{{ output.data > 10 }}", do="continue", set={"ctx.size": "big"}),
        Rule(when="{{ output.data > 5 }}", do="continue", set={"ctx.size": "medium"}),
        Rule(do="continue", set={"ctx.size": "small"}),
    ]
    assert (await run(py("t", "result = 7", rules))).set == {"ctx.size": "medium"}
    assert (await run(py("t", "result = 1", rules))).set == {"ctx.size": "small"}


async def test_bad_rule_condition_fails_the_step() -> None:
    outcome = await run(py("t", "result = 1", [Rule(when="{{ output.data + }}", do="continue")]))
    assert outcome.status == "failed" and outcome.error["type"] == "TemplateError"


@pytest.mark.parametrize("action", ["teleport"])
async def test_unknown_rule_action_fails(action: str) -> None:
    outcome = await run(py("t", "result = 1", [Rule(do=action)]))
    assert outcome.status == "failed" and action in outcome.error["message"]
