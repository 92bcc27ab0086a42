"""Register-time checks on a parsed playbook (DSL.md "Validation at register time")."""

from __future__ import annotations

from typing import Any

from noetl_common import MAX_NAME_CHARS
from noetl_common.templating import TemplateError, check_syntax, has_template

from ._errors import PlaybookError
from ._model import Playbook, Step

#: Tool kinds a playbook may declare; ``system_*`` kinds are allowed only under ``system/``.
KNOWN_KINDS = frozenset(
    {
        "python",
        "http",
        "postgres",
        "duckdb",
        "workbook",
        "playbook",
        "secrets",
        "noop",
        "nats",
        "wasm",
        "agent",
    }
)
#: WASM host imports any playbook may be granted; the rest belong to system playbooks.
USER_CAPABILITIES = frozenset({"event_publish", "result_put"})
#: Every host import of guest ABI v1 (docs/wasm.md).
ALL_CAPABILITIES = USER_CAPABILITIES | {"object_put"}
#: Template names the runtime binds itself; a step or iterator of that name would be shadowed.
RESERVED_NAMES = frozenset({"workload", "ctx", "vars", "iter", "args", "input", "execution_id"})
#: Most steps in a workflow, tasks in a step's pipeline and arcs out of a step: far above any
#: real playbook, and low enough that routing (reachability between steps, evaluated under
#: the execution lock) stays cheap.
MAX_STEPS = 1000
MAX_TASKS = 100
MAX_ARCS = 100
# Python source is handed to the interpreter as-is, so its braces are not templates.
_UNRENDERED_KEYS = frozenset({"code"})


def is_system_path(path: str) -> bool:
    """True for catalog paths in the privileged ``system/`` namespace."""
    return path.startswith("system/")


def validate(playbook: Playbook) -> None:
    """Raise :class:`PlaybookError` for the first rule of DSL.md the playbook breaks."""
    names: set[str] = set()
    for step in playbook.steps:
        if len(step.name) > MAX_NAME_CHARS:
            raise PlaybookError(
                f"step name is {len(step.name)} characters, more than {MAX_NAME_CHARS}",
                step=step.name[:40],
                field="step",
            )
        if len(step.tasks) > MAX_TASKS:
            raise PlaybookError(
                f"the pipeline has {len(step.tasks)} tasks, more than {MAX_TASKS}",
                step=step.name,
                field="tool",
            )
        if step.next is not None and len(step.next.arcs) > MAX_ARCS:
            raise PlaybookError(
                f"the step has {len(step.next.arcs)} arcs, more than {MAX_ARCS}", step=step.name, field="next"
            )
        if step.name in names:
            raise PlaybookError(f"duplicate step name {step.name!r}", step=step.name, field="step")
        if step.name in RESERVED_NAMES:
            raise PlaybookError(
                f"step name {step.name!r} is a reserved template name ({', '.join(sorted(RESERVED_NAMES))})",
                step=step.name,
                field="step",
            )
        names.add(step.name)
    system = is_system_path(playbook.path)
    _check_capabilities(playbook.executor, system, step=None, field="executor")
    for step in playbook.steps:
        _check_step(step, names, system)


def _check_step(step: Step, names: set[str], system: bool) -> None:
    if step.loop is not None:
        if not step.has_tool:
            raise PlaybookError("a loop needs a tool to run for each item", step=step.name, field="loop")
        if step.loop.iterator in RESERVED_NAMES | {"index"}:
            raise PlaybookError(
                f"iterator {step.loop.iterator!r} is a reserved template name",
                step=step.name,
                field="loop.iterator",
            )
    if step.next is not None:
        for i, arc in enumerate(step.next.arcs):
            if arc.step not in names:
                raise PlaybookError(
                    f"arc to missing step {arc.step!r}", step=step.name, field=f"next[{i}].step"
                )
    for task in step.tasks:
        field = f"tool.{task.name}"
        if task.kind.startswith("system_"):
            if not system:
                raise PlaybookError(
                    f"tool kind {task.kind!r} is reserved for system/ playbooks",
                    step=step.name,
                    field=f"{field}.kind",
                )
        elif task.kind not in KNOWN_KINDS:
            raise PlaybookError(
                f"unknown tool kind {task.kind!r}; known kinds: {', '.join(sorted(KNOWN_KINDS))}",
                step=step.name,
                field=f"{field}.kind",
            )
        if task.kind == "wasm":
            _check_capabilities(task.config, system, step=step.name, field=field)
        _check_templates(task.config, step.name, f"{field}")
        for i, rule in enumerate(task.rules):
            if rule.when is not None:
                _check_condition(rule.when, step.name, f"{field}.rules[{i}].when")
            _check_templates(rule.set or {}, step.name, f"{field}.rules[{i}].set")
    _check_templates(step.args, step.name, "args")
    _check_templates(step.set, step.name, "set")
    if step.when is not None:
        _check_condition(step.when, step.name, "when")
    for i, admit in enumerate(step.admit):
        if admit.when is not None:
            _check_condition(admit.when, step.name, f"spec.policy.admit.rules[{i}].when")
    if step.loop is not None:
        _check_templates(step.loop.items, step.name, "loop.in")
        _check_templates(step.loop.max_in_flight, step.name, "loop.spec.max_in_flight")
    if step.next is not None:
        for i, arc in enumerate(step.next.arcs):
            if arc.when is not None:
                _check_condition(arc.when, step.name, f"next[{i}].when")
            _check_templates(arc.args, step.name, f"next[{i}].args")
            _check_templates(arc.set, step.name, f"next[{i}].set")


def _check_capabilities(config: dict[str, Any] | None, system: bool, *, step: str | None, field: str) -> None:
    if not config:
        return
    capabilities = config.get("capabilities") or []
    if not isinstance(capabilities, list):
        raise PlaybookError("capabilities must be a list", step=step, field=f"{field}.capabilities")
    unknown = [str(c) for c in capabilities if str(c) not in ALL_CAPABILITIES]
    if unknown:
        raise PlaybookError(
            f"unknown capabilities {unknown}; the WASM host has {', '.join(sorted(ALL_CAPABILITIES))}",
            step=step,
            field=f"{field}.capabilities",
        )
    if system:
        return
    denied = [str(c) for c in capabilities if str(c) not in USER_CAPABILITIES]
    if denied:
        raise PlaybookError(
            f"capabilities {denied} are reserved for system/ playbooks; user playbooks may use "
            f"{', '.join(sorted(USER_CAPABILITIES))}",
            step=step,
            field=f"{field}.capabilities",
        )


def _check_condition(expr: str, step: str, field: str) -> None:
    try:
        check_syntax(expr)
    except TemplateError as exc:
        raise PlaybookError(exc.message, step=step, field=field) from exc


def _check_templates(value: Any, step: str, field: str) -> None:
    if isinstance(value, str):
        if has_template(value):
            _check_condition(value, step, field)
    elif isinstance(value, dict):
        for key, item in value.items():
            if key not in _UNRENDERED_KEYS:
                _check_templates(item, step, f"{field}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_templates(item, step, f"{field}[{i}]")
