"""Runs a step's task pipeline as one command (DSL.md "Steps, pipelines, routing").

For each task, in order: render its config over the command's context plus the pipeline
locals, run its tool, then apply its rules (first match wins; ``when`` None is the else):
``continue | retry | jump | break | fail``, each optionally with ``set`` writes. A task
without rules continues on success and fails the step on error. The step result is the
last task's result, or the result of the task whose rule said ``break``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from noetl_common import CommandSpec, Rule, TaskSpec
from noetl_common.templating import DEFAULT_LIMITS, TemplateError, TemplateLimits, evaluate, render

from ._errors import exception_error, pipeline_error, result_error
from ._metrics import DISPATCH_SECONDS
from ._output import output_block, select_output
from ._runtime import CredentialError, runtime
from .tools import ToolError, ToolRegistry, UnknownToolError, keychain_names, keychain_values

DEFAULT_RETRY_ATTEMPTS = 3
DEFAULT_RETRY_DELAY = 1.0
#: Upper bound of one backoff sleep, so a typo'd delay cannot park a command for hours.
MAX_RETRY_DELAY = 300.0
#: Task runs per command before a jump/retry cycle is declared runaway.
DEFAULT_MAX_TASK_RUNS = 10_000

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class StepOutcome:
    """What a pipeline run produced: the terminal status, result or error, and ``set`` patch."""

    status: str  # "completed" | "failed"
    result: Any = None
    error: dict[str, Any] | None = None  # {message, type, task, kind, retryable, code}
    set: dict[str, Any] = field(default_factory=dict)
    task: str | None = None  # the task that ended the pipeline
    task_runs: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "completed"


def backoff_delay(rule: Rule, attempt: int) -> float:
    """Delay before attempt ``attempt + 1``: none 0, fixed d, linear d*n, exponential d*2^(n-1)."""
    delay = DEFAULT_RETRY_DELAY if rule.delay is None else max(0.0, float(rule.delay))
    mode = (rule.backoff or "fixed").lower()
    if mode == "none":
        return 0.0
    if mode == "linear":
        delay *= attempt
    elif mode == "exponential":
        delay *= 2 ** (attempt - 1)
    return min(delay, MAX_RETRY_DELAY)


def _apply_set(context: dict[str, Any], key: str, value: Any) -> None:
    """Make a ``set`` write (``ctx.k.j``) visible to later tasks of the same pipeline."""
    parts = key.split(".")
    if len(parts) < 2:
        context[key] = value
        return
    scope = context.get(parts[0])
    node: dict[str, Any] = dict(scope) if isinstance(scope, Mapping) else {}
    context[parts[0]] = node
    for part in parts[1:-1]:
        child = node.get(part)
        child = dict(child) if isinstance(child, Mapping) else {}
        node[part] = child
        node = child
    node[parts[-1]] = value


def _template_error(exc: TemplateError, step: str | None, task: str, field: str) -> dict[str, Any]:
    """A template that failed (or went over its budget): names the step, the task and the field."""
    where = f"step {step!r} task {task!r}" if step else f"task {task!r}"
    return pipeline_error(f"{where}: {exc.at(field)}: {exc.message}", type(exc).__name__, task, kind="config")


def _task_inputs(spec: CommandSpec, raw: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Step-level args, overridden by the task's own ``args`` / ``input`` (both forms).

    A task input written as a literal null is a default (conformance C6): it does not
    hide a step-level arg of the same name.
    """
    inputs = dict(spec.args)
    for key in ("args", "input"):
        own, written = config.get(key), raw.get(key)
        if not isinstance(own, Mapping):
            continue
        for name, value in own.items():
            if (
                value is None
                and name in inputs
                and isinstance(written, Mapping)
                and written.get(name) is None
            ):
                continue
            inputs[name] = value
    return inputs


#: Config keys left unrendered: a python task's source (``{{`` is valid python), and an http
#: task's ``retry``, which the tool renders per page over each response (pagination).
_UNRENDERED_KEYS = {
    "python": frozenset({"code", "code_b64", "code_base64"}),
    "http": frozenset({"retry"}),
}


def _render_config(task: TaskSpec, context: Mapping[str, Any], limits: TemplateLimits) -> Any:
    """Render the task's config over ``context``, except the keys its tool renders itself."""
    kept = _UNRENDERED_KEYS.get(task.kind)
    if kept is None:
        return render(task.config, context, limits)
    rest = {k: v for k, v in task.config.items() if k not in kept}
    rendered = render(rest, context, limits)
    if not isinstance(rendered, dict):
        return rendered
    return {**rendered, **{k: v for k, v in task.config.items() if k in kept}}


def task_timeout(config: Mapping[str, Any]) -> float | None:
    """A task's own bound, ``spec.timeout`` (seconds) of its tool; None when unset.

    Unlike the step ``timeout`` (which fails the step), a task that runs past it is an
    error outcome its rules can retry. A tool's plain ``timeout:`` key stays the tool's
    (the http request timeout, for instance)."""
    spec = config.get("spec")
    raw = spec.get("timeout") if isinstance(spec, Mapping) else None
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw <= 0:
        raise ValueError(f"spec.timeout must be a positive number of seconds, got {raw!r}")
    return float(raw)


class PipelineRunner:
    """Runs ``CommandSpec.tasks`` with the tools of a :class:`ToolRegistry`."""

    def __init__(
        self,
        registry: ToolRegistry,
        *,
        sleep: Sleep = asyncio.sleep,
        max_task_runs: int = DEFAULT_MAX_TASK_RUNS,
        limits: TemplateLimits = DEFAULT_LIMITS,
    ) -> None:
        self.registry = registry
        self._sleep = sleep
        self.max_task_runs = max_task_runs
        #: the budget of each template render: a task's config, a rule's condition or ``set``
        self.limits = limits

    def _base_context(self, spec: CommandSpec) -> dict[str, Any]:
        context = dict(spec.context)
        context["args"] = dict(spec.args)
        context.setdefault("input", context["args"])
        context.update({"_prev": None, "_task": None, "_attempt": 1})
        # Tasks that have not run yet read as none, like a step that did not run.
        for task in spec.tasks:
            context.setdefault(task.name, None)
        return context

    async def run(self, spec: CommandSpec, step: str | None = None) -> StepOutcome:
        """Run the pipeline to its end, a ``break``, or a failure. Never raises for task errors.

        ``step``: the step the command runs, named in the errors of its templates.
        """
        tasks = spec.tasks
        positions: dict[str, int] = {}
        for i, task in enumerate(tasks):
            positions.setdefault(task.name, i)
        context = self._base_context(spec)
        patch: dict[str, Any] = {}
        index, attempt, runs = 0, 1, 0
        result: Any = None
        last_task: str | None = None

        def failed(error: dict[str, Any]) -> StepOutcome:
            return StepOutcome("failed", None, error, patch, error.get("task"), runs)

        while index < len(tasks):
            task = tasks[index]
            runs += 1
            if runs > self.max_task_runs:
                message = f"pipeline exceeded {self.max_task_runs} task runs (a retry/jump cycle?)"
                return failed(pipeline_error(message, "PipelineLimitError", task.name, kind="logic"))
            context.update({"_task": task.name, "_attempt": attempt})
            last_task = task.name
            try:
                # {{ keychain.<name> }}: resolved for this command before the config is rendered
                unrendered = _UNRENDERED_KEYS.get(task.kind, frozenset())
                rendered = {k: v for k, v in task.config.items() if k not in unrendered}
                names = keychain_names(rendered)
                if names:
                    await keychain_values(runtime(), names)
                    context["keychain"] = dict(runtime().keychain_values)
            except CredentialError as exc:
                return failed(exception_error(exc, task.name))
            try:
                config = _render_config(task, context, self.limits)
                tool = self.registry.get(task.kind)
            except TemplateError as exc:
                # Fixed before the tool runs, so no rule can repair it: fail the step.
                return failed(_template_error(exc, step, task.name, "config"))
            except UnknownToolError as exc:
                return failed({**exception_error(exc, task.name), "kind": "config"})
            if not isinstance(config, dict):
                config = {}
            output = await self._call(
                task, tool, config, _task_inputs(spec, task.config, config), context, attempt
            )
            rule_context = {**context, "outcome": output, "output": output}
            try:
                index_of_rule, rule = self._match(task, rule_context)
                if rule is not None and rule.set:
                    try:
                        values = render(rule.set, rule_context, self.limits)
                    except TemplateError as exc:
                        raise exc.within("set").within(index_of_rule) from None
                    for key, value in values.items():
                        patch[key] = value
                        _apply_set(context, key, value)
            except TemplateError as exc:
                return failed(_template_error(exc, step, task.name, "rules"))
            result = output["result"]
            context[task.name] = result
            context["_prev"] = result
            action = rule.do if rule is not None else ("continue" if output["status"] == "ok" else "fail")

            if action == "continue":
                index, attempt = index + 1, 1
            elif action == "break":
                return StepOutcome("completed", result, None, patch, task.name, runs)
            elif action == "fail":
                error = dict(
                    output["error"]
                    or pipeline_error(f"task {task.name!r} failed by rule", "RuleFailure", None, kind="logic")
                )
                error["task"] = task.name
                return failed(error)
            elif action == "retry":
                limit = (
                    rule.attempts
                    if rule is not None and rule.attempts is not None
                    else DEFAULT_RETRY_ATTEMPTS
                )
                if attempt >= limit:
                    # the last error, kind / retryable / code included, as upstream reports it
                    last = output["error"] or pipeline_error("", "RetriesExhausted", None, kind="logic")
                    message = f"task {task.name!r}: retries exhausted after {attempt} attempt(s)"
                    cause = last.get("message")
                    return failed(
                        {**last, "message": f"{message}: {cause}" if cause else message, "task": task.name}
                    )
                assert rule is not None
                await self._sleep(backoff_delay(rule, attempt))
                attempt += 1
            elif action == "jump":
                target = rule.to if rule is not None else None
                if target not in positions:
                    return failed(
                        pipeline_error(
                            f"jump to unknown task {target!r}", "RuleError", task.name, kind="config"
                        )
                    )
                assert target is not None
                index, attempt = positions[target], 1
            else:
                return failed(
                    pipeline_error(f"unknown rule action {action!r}", "RuleError", task.name, kind="config")
                )

        return StepOutcome("completed", result, None, patch, last_task, runs)

    async def _call(
        self,
        task: TaskSpec,
        tool: Any,
        config: dict[str, Any],
        inputs: dict[str, Any],
        context: Mapping[str, Any],
        attempt: int,
    ) -> dict[str, Any]:
        """Run one tool call and describe it as the ``outcome`` / ``output`` rules see."""
        started = time.perf_counter()
        block = output_block(config)  # the task's ``output:`` (select / store), never the tool's
        try:
            limit = task_timeout(config)
            if limit is None:
                value = await tool(config, inputs, context)
            else:
                try:
                    value = await asyncio.wait_for(tool(config, inputs, context), limit)
                except TimeoutError:
                    raise TimeoutError(f"task {task.name!r} timed out after {limit:g} s") from None
            error = result_error(value)  # a result {status: error, error_kind | retryable | code}
            status = "ok" if error is None else "error"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # a ToolError keeps its result (an http error response) for the rules to read
            value, status = (exc.result if isinstance(exc, ToolError) else None), "error"
            error = exception_error(exc, None)
        elapsed = time.perf_counter() - started
        DISPATCH_SECONDS.labels(task.kind).observe(elapsed)
        output = {
            "status": status,
            "result": value,
            "data": value,
            "error": error,
            "meta": {"task": task.name, "kind": task.kind, "attempt": attempt, "duration_seconds": elapsed},
        }
        helper = self.registry.helper(task.kind)
        if helper is not None:
            output[task.kind] = helper(value)  # of the tool's own result: http status, headers ...
        if block is not None and error is None:
            output["result"] = output["data"] = select_output(value, block)
        return output

    def _match(self, task: TaskSpec, context: Mapping[str, Any]) -> tuple[int, Rule | None]:
        """The first rule whose ``when`` holds and its index; a failing one is named in the error's field."""
        for index, rule in enumerate(task.rules):
            try:
                if rule.when is None or evaluate(rule.when, context, self.limits):
                    return index, rule
            except TemplateError as exc:
                raise exc.within("when").within(index) from None
        return -1, None
