"""A step's ``tool``: its pipeline of tasks, workbook calls inlined, and each task's rules."""

from __future__ import annotations

from typing import Any

from noetl_common import Rule, TaskSpec

from ._errors import PlaybookError
from ._fields import condition, inputs, scoped_set

_DIRECTIVES = frozenset({"continue", "retry", "jump", "break", "fail"})
#: ``none`` (upstream's) retries at once, whatever ``delay`` says; ``fixed`` is the earlier form's.
_BACKOFFS = frozenset({"none", "fixed", "linear", "exponential"})
_SCOPES = frozenset({"ctx", "vars", "iter"})
#: ``output.store.kind`` values upstream accepts (``object`` is its old name of ``disk``).
STORE_KINDS = frozenset({"auto", "memory", "kv", "disk", "object", "s3", "gcs", "db", "duckdb", "eventlog"})
MAX_SELECT_PATHS = 100
#: http pagination: pages one task may fetch, and how they are aggregated (worker's ``_http_pages``).
MAX_PAGES = 1000
COLLECT_STRATEGIES = frozenset({"append", "replace", "merge"})
# Task keys the model lifts out of ``config``; everything else (auth, libs, assert, desc ...) stays.
_TASK_META_KEYS = frozenset({"kind", "eval", "args", "input"})


def tool_tasks(raw: Any, step: str, workbook: dict[str, dict[str, Any]]) -> list[TaskSpec]:
    """The tasks of ``tool``: one mapping, or a list of pipeline items (either form)."""
    if raw is None:
        return []
    if isinstance(raw, dict):
        return [_task(raw, step, step, "tool", workbook, pipeline=False)]
    if not isinstance(raw, list):
        raise PlaybookError("tool must be a mapping or a list of tasks", step=step, field="tool")
    tasks: list[TaskSpec] = []
    for i, item in enumerate(raw):
        field = f"tool[{i}]"
        if isinstance(item, dict) and "kind" in item:
            name = item.get("name")
            label = name if isinstance(name, str) else f"task_{i}"  # upstream numbers from 0
            tasks.append(_task(item, label, step, field, workbook, pipeline=True))
        elif isinstance(item, dict) and len(item) == 1 and isinstance(next(iter(item.values())), dict):
            label, body = next(iter(item.items()))
            tasks.append(_task(body, str(label), step, f"{field}.{label}", workbook, pipeline=False))
        else:
            raise PlaybookError(
                "a pipeline item is either {name: x, kind: ...} or {x: {kind: ...}}", step=step, field=field
            )
    labels = [t.name for t in tasks]
    for label in labels:
        if labels.count(label) > 1:
            raise PlaybookError(f"duplicate task name {label!r} in the pipeline", step=step, field="tool")
    for task in tasks:
        for rule in task.rules:
            if rule.do == "jump" and rule.to not in labels:
                raise PlaybookError(
                    f"jump target {rule.to!r} is not a task of this pipeline",
                    step=step,
                    field=f"tool.{task.name}.rules",
                )
    return tasks


def _task(
    raw: dict[str, Any],
    label: str,
    step: str,
    field: str,
    workbook: dict[str, dict[str, Any]],
    *,
    pipeline: bool,
) -> TaskSpec:
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        raise PlaybookError("a task needs a kind", step=step, field=f"{field}.kind")
    config = _config(raw)
    if pipeline:
        config.pop("name", None)
    args = inputs(raw, step, f"{field}.")
    rules = _rules(raw, step, field)
    if kind == "workbook":
        ref = raw.get("task") or raw.get("workbook") or raw.get("name")
        if not isinstance(ref, str) or ref not in workbook:
            raise PlaybookError(
                f"workbook task {ref!r} is not defined in workbook", step=step, field=f"{field}.name"
            )
        target = workbook[ref]
        kind = target["kind"]
        # Workbook args are defaults (often null) that the caller's args override.
        args = {**inputs(target, step, f"workbook.{ref}.tool."), **args}
        rules = rules or _rules(target, step, f"workbook.{ref}")
        config = _config(target)
        config["workbook"] = ref
    _check_output(config.get("output"), step, f"{field}.output")
    if kind == "http":
        _check_pagination(config.get("retry"), step, f"{field}.retry")
    if args:
        config["args"] = args
    return TaskSpec(name=label, kind=kind, config=config, rules=rules)


def _check_pagination(retry: Any, step: str, field: str) -> None:
    """The http tool's ``retry: [{when, then: {max_attempts, next_call, collect}}]`` pagination."""
    if not isinstance(retry, list):
        return  # upstream's other retry shapes (true, a count) are left to the rules
    for i, policy in enumerate(retry):
        then = policy.get("then") if isinstance(policy, dict) else None
        if not isinstance(then, dict) or not isinstance(policy.get("when"), str):
            raise PlaybookError("a retry policy is {when: '{{ ... }}', then: {...}}", step=step, field=f"{field}[{i}]")
        if "next_call" not in then and "collect" not in then:
            continue
        pages, collect = then.get("max_attempts", 1), then.get("collect") or {}
        if isinstance(pages, bool) or not isinstance(pages, int) or not 1 <= pages <= MAX_PAGES:
            raise PlaybookError(
                f"max_attempts of a pagination policy must be 1..{MAX_PAGES}", step=step, field=f"{field}[{i}].then"
            )
        if not isinstance(then.get("next_call") or {}, dict) or not isinstance(collect, dict):
            raise PlaybookError("next_call and collect must be mappings", step=step, field=f"{field}[{i}].then")
        if collect.get("strategy", "append") not in COLLECT_STRATEGIES:
            raise PlaybookError(
                f"collect.strategy must be one of {', '.join(sorted(COLLECT_STRATEGIES))}",
                step=step,
                field=f"{field}[{i}].then.collect.strategy",
            )


def _check_output(block: Any, step: str, field: str) -> None:
    """Upstream's ``output: {select: [path | {path, as}], store: {kind}}``; an ``output`` that is
    no mapping belongs to the tool (the wasm tool's output format)."""
    if not isinstance(block, dict):
        return
    select, store = block.get("select"), block.get("store")
    if select is not None:
        if not isinstance(select, list) or len(select) > MAX_SELECT_PATHS:
            raise PlaybookError(
                f"output.select must be a list of at most {MAX_SELECT_PATHS} paths", step=step, field=f"{field}.select"
            )
        for i, item in enumerate(select):
            path = item.get("path") if isinstance(item, dict) else item
            alias = item.get("as") if isinstance(item, dict) else None
            if not isinstance(path, str) or not path.strip() or not isinstance(alias, str | None):
                raise PlaybookError(
                    "an output.select item is a path or {path, as}", step=step, field=f"{field}.select[{i}]"
                )
    if store is not None:
        kind = store.get("kind", "auto") if isinstance(store, dict) else None
        if kind not in STORE_KINDS:
            raise PlaybookError(
                f"output.store must be a mapping whose kind is one of {', '.join(sorted(STORE_KINDS))}",
                step=step,
                field=f"{field}.store",
            )


def _config(raw: dict[str, Any]) -> dict[str, Any]:
    """The tool's own keys: everything but kind, inputs and rules (``spec.policy``)."""
    config = {k: v for k, v in raw.items() if k not in _TASK_META_KEYS}
    spec = config.get("spec")
    if isinstance(spec, dict) and "policy" in spec:
        rest = {k: v for k, v in spec.items() if k != "policy"}
        if rest:
            config["spec"] = rest
        else:
            del config["spec"]
    return config


def _rules(raw: dict[str, Any], step: str, field: str) -> list[Rule]:
    """Normalise earlier ``eval`` and current ``spec.policy.rules`` into :class:`Rule` lists."""
    spec = raw.get("spec")
    policy = spec.get("policy") if isinstance(spec, dict) else None
    items: Any = None
    where = f"{field}.eval"
    if raw.get("eval") is not None:
        items = raw["eval"]
    elif isinstance(policy, dict) and policy.get("rules") is not None:
        items, where = policy["rules"], f"{field}.spec.policy.rules"
    if items is None:
        return []
    if not isinstance(items, list):
        raise PlaybookError("task rules must be a list", step=step, field=where)
    rules: list[Rule] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise PlaybookError("a rule must be a mapping", step=step, field=f"{where}[{i}]")
        if "else" in item:
            body, when = item["else"] if item["else"] is not None else {}, None
        else:
            body = item
            when = condition(item.get("when", item.get("expr")), step, f"{where}[{i}].when")
        if not isinstance(body, dict):
            raise PlaybookError("a rule body must be a mapping", step=step, field=f"{where}[{i}]")
        then = body.get("then")
        if isinstance(then, dict):
            body = {**{k: v for k, v in body.items() if k != "then"}, **then}
        rules.append(_rule(body, when, step, f"{where}[{i}]"))
    return rules


def _rule(body: dict[str, Any], when: str | None, step: str, field: str) -> Rule:
    do = body.get("do", "continue")
    if do not in _DIRECTIVES:
        raise PlaybookError(
            f"unknown rule directive {do!r}; use one of {sorted(_DIRECTIVES)}", step=step, field=f"{field}.do"
        )
    backoff = body.get("backoff")
    if backoff is not None and backoff not in _BACKOFFS:
        raise PlaybookError(f"unknown backoff {backoff!r}", step=step, field=f"{field}.backoff")
    attempts, delay, to = body.get("attempts"), body.get("delay"), body.get("to")
    if attempts is not None and (not isinstance(attempts, int) or attempts < 1):
        raise PlaybookError("attempts must be a positive integer", step=step, field=f"{field}.attempts")
    if delay is not None and not isinstance(delay, int | float):
        raise PlaybookError("delay must be a number of seconds", step=step, field=f"{field}.delay")
    if do == "jump" and not isinstance(to, str):
        raise PlaybookError("jump needs 'to' naming a task", step=step, field=f"{field}.to")
    scoped = scoped_set(body, step, f"{field}.set", allowed=_SCOPES)
    return Rule(
        do=do,
        when=when,
        attempts=attempts,
        backoff=backoff,
        delay=float(delay) if delay is not None else None,
        to=to if isinstance(to, str) else None,
        set=scoped or None,
    )
