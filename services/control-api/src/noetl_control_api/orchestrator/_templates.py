"""What a step's templates see, and rendering them within the execution's budget."""

from __future__ import annotations

from typing import Any

from noetl_common.templating import TemplateError, TemplateLimits, evaluate, render

from ..dsl import Playbook, Step
from ._failure import StepFailure
from ._state import ExecutionState


def template_names(
    playbook: Playbook,
    state: ExecutionState,
    args: dict[str, Any],
    *,
    iterator: str | None = None,
    item: Any = None,
    index: int | None = None,
) -> dict[str, Any]:
    """Every name a template may use; reserved names win over bare workload keys."""
    names: dict[str, Any] = dict(state.workload)
    for step in playbook.steps:
        names[step.name] = state.results.get(step.name)
    names.update(
        workload=state.workload,
        ctx=state.ctx,
        vars=state.vars,
        execution_id=state.execution_id,
        args=args,
        input=args,
        iter={},
    )
    if iterator is not None:
        names["iter"] = {iterator: item, "index": index}
        names[iterator] = item
    return names


def command_context(playbook: Playbook, step: Step, names: dict[str, Any]) -> dict[str, Any]:
    """The names a command of ``step`` carries for its worker: those its tasks' templates and
    conditions may read, not every step's result. A chain's or a loop's command would carry
    every earlier result (a loop's, the whole list it iterates) while its templates read a
    few; the worker renders the same values from these (docs/performance.md)."""
    read = playbook.names_read_by(step)
    return names if read is None else {name: value for name, value in names.items() if name in read}


def render_field(step: str, what: str, value: Any, names: dict[str, Any], limits: TemplateLimits) -> Any:
    """Render one field of a step; a failure (a template over its budget too) fails the step."""
    try:
        return render(value, names, limits)
    except TemplateError as exc:
        raise StepFailure(step, f"step {step!r}: {exc.at(what)}: {exc.message}") from exc


def condition_holds(
    step: str, what: str, condition: str | None, names: dict[str, Any], limits: TemplateLimits
) -> bool:
    """Whether a ``when`` holds (no condition always does); a failure fails the step."""
    if condition is None:
        return True
    try:
        return evaluate(condition, names, limits)
    except TemplateError as exc:
        raise StepFailure(step, f"step {step!r}: {what}: {exc.message}") from exc


def loop_limit(step: str, raw: int | str | None, names: dict[str, Any], limits: TemplateLimits) -> int | None:
    """A loop's ``max_in_flight``: an integer as written, or a template rendered now to one."""
    if raw is None or isinstance(raw, int):
        return raw
    value = render_field(step, "loop.spec.max_in_flight", raw, names, limits)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StepFailure(
            step, f"step {step!r}: loop.spec.max_in_flight must render to a positive integer, got {value!r}"
        )
    return value


def done_scope(step: str, event: str, result: Any) -> dict[str, Any]:
    """Names an arc sees once ``step`` is done: ``event`` (``call.done``, ``loop.done``, or
    ``step.exit`` for a step without a tool) and ``output`` (``status: ok``, ``data``)."""
    return {
        "event": {"name": event, "step": step, "payload": {"result": result}},
        "output": {"status": "ok", "data": result, "result": result, "error": None},
    }


def error_scope(step: str, error: dict[str, Any]) -> dict[str, Any]:
    """Names an arc sees after ``step``'s call failed: ``event`` (``call.error``), ``output``
    (``status: error``), ``error`` and the step's result ``{status: error, error}`` by its name."""
    return {
        "event": {"name": "call.error", "step": step, "payload": {"error": error}},
        "output": {"status": "error", "data": None, "result": None, "error": error},
        "error": error,
        step: {"status": "error", "error": error},
    }
