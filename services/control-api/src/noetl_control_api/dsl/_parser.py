"""YAML text → :class:`Playbook`, accepting both syntax generations of ``noetl.io/v2``.

Current form: ``next: {spec: {mode}, arcs}``, pipeline items ``- name: x`` + ``kind``,
``input:``, ``spec.policy.rules``, ``set: {ctx.k: ...}``. Earlier form: ``next:`` list or
string, ``spec.next_mode``, step ``when``, ``eval: [{expr, do}, {else}]``,
``set_ctx / set_vars / set_iter``, ``args:``. Everything below the parser sees one model.
"""

from __future__ import annotations

from typing import Any

import yaml
from noetl_common import Rule, TaskSpec

from ._errors import PlaybookError
from ._model import Arc, Loop, Next, Playbook, Step
from ._validate import MAX_STEPS, validate

API_VERSION = "noetl.io/v2"
#: Limits on the parsed tree (after alias expansion), far above any real playbook.
MAX_NODES = 200_000
MAX_DEPTH = 100

_V2_EXAMPLE = (
    "apiVersion: noetl.io/v2\n"
    "kind: Playbook\n"
    "metadata: {name: hello, path: examples/hello}\n"
    "workload: {message: hi}\n"
    "workflow:\n"
    "  - step: start\n"
    "    tool: {kind: python, input: {message: '{{ message }}'}, code: \"result = {'echo': message}\"}\n"
    "    next: {spec: {mode: exclusive}, arcs: [{step: end}]}\n"
    "  - step: end"
)

_DIRECTIVES = frozenset({"continue", "retry", "jump", "break", "fail"})
_BACKOFFS = frozenset({"fixed", "linear", "exponential"})
_RULE_SET_KEYS = {"set": None, "set_ctx": "ctx", "set_vars": "vars", "set_iter": "iter"}
_SCOPES = frozenset({"ctx", "vars", "iter"})
# Task keys the model lifts out of ``config``; everything else (auth, libs, assert, desc ...) stays.
_TASK_META_KEYS = frozenset({"kind", "eval", "args", "input"})


def parse_playbook(text: str) -> Playbook:
    """Parse and validate playbook YAML; raise :class:`PlaybookError` naming step and field."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PlaybookError(f"malformed YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise PlaybookError("a playbook must be a YAML mapping")
    _check_size(doc)
    _check_header(doc)
    metadata = doc.get("metadata")
    if not isinstance(metadata, dict):
        raise PlaybookError("metadata must be a mapping with name and path", field="metadata")
    name, path = metadata.get("name"), metadata.get("path")
    if not isinstance(name, str) or not name:
        raise PlaybookError("metadata.name is required", field="metadata.name")
    if not isinstance(path, str) or not path:
        raise PlaybookError("metadata.path is required", field="metadata.path")
    if "vars" in doc:
        raise PlaybookError(
            "'vars' at the playbook root is not supported; keep run state in ctx "
            "(set: {ctx.k: ...} on a step, arc or rule) and defaults in workload",
            field="vars",
        )
    workload = doc.get("workload") or {}
    if not isinstance(workload, dict):
        raise PlaybookError("workload must be a mapping", field="workload")
    executor = doc.get("executor")
    if executor is not None and not isinstance(executor, dict):
        raise PlaybookError("executor must be a mapping", field="executor")
    workbook = _workbook(doc.get("workbook"))
    workflow = doc.get("workflow")
    if not isinstance(workflow, list) or not workflow:
        raise PlaybookError("workflow must be a non-empty list of steps", field="workflow")
    if len(workflow) > MAX_STEPS:  # before each step is parsed
        raise PlaybookError(
            f"the workflow has {len(workflow)} steps, more than {MAX_STEPS}", field="workflow"
        )
    steps = [_step(raw, i, workbook) for i, raw in enumerate(workflow)]
    _lower_wasm(executor, steps)
    playbook = Playbook(
        name=name,
        path=path,
        steps=steps,
        workload={str(k): v for k, v in workload.items()},
        executor=executor,
        api_version=API_VERSION,
    )
    validate(playbook)
    return playbook


def _lower_wasm(executor: dict[str, Any] | None, steps: list[Step]) -> None:
    """Lower both WASM opt-ins to one task shape (ARCHITECTURE §8).

    ``executor: {runtime: wasm, plugin, capabilities}`` is the playbook's default for its
    ``wasm`` tasks: a task without its own ``plugin`` / ``capabilities`` takes them from it.
    Every ``wasm`` task must end up naming a plug-in path.
    """
    wasm_default = executor if executor is not None and executor.get("runtime") == "wasm" else None
    for step in steps:
        for task in step.tasks:
            if task.kind != "wasm":
                continue
            if wasm_default is not None:
                if wasm_default.get("plugin") is not None:
                    task.config.setdefault("plugin", wasm_default["plugin"])
                if "capabilities" in wasm_default:
                    task.config.setdefault("capabilities", wasm_default["capabilities"])
            plugin = task.config.get("plugin")
            path = plugin.get("path") if isinstance(plugin, dict) else plugin
            if not isinstance(path, str) or not path:
                raise PlaybookError(
                    "a wasm task needs plugin: {path, version?, entry?} (or executor.runtime wasm with a plugin)",
                    step=step.name,
                    field=f"tool.{task.name}.plugin",
                )


def _check_size(doc: Any) -> None:
    """Bound the expanded document: YAML aliases can make a small text a huge tree."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise PlaybookError(f"the playbook expands to more than {MAX_NODES} YAML nodes")
        if depth > MAX_DEPTH:
            raise PlaybookError(f"the playbook nests deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            stack.extend((item, depth + 1) for item in value.values())
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


def _check_header(doc: dict[str, Any]) -> None:
    api_version = doc.get("apiVersion")
    if api_version == "noetl.io/v1" or (isinstance(api_version, str) and api_version.endswith("/v1")):
        raise PlaybookError(
            f"apiVersion {api_version} is no longer supported; rewrite the playbook in the v2 form:\n{_V2_EXAMPLE}",
            field="apiVersion",
        )
    if api_version != API_VERSION:
        raise PlaybookError(
            f"apiVersion must be {API_VERSION}, got {api_version!r}; a playbook looks like:\n{_V2_EXAMPLE}",
            field="apiVersion",
        )
    if doc.get("kind") != "Playbook":
        raise PlaybookError(f"kind must be Playbook, got {doc.get('kind')!r}", field="kind")


def _workbook(raw: Any) -> dict[str, dict[str, Any]]:
    if raw is None:
        return {}
    entries: list[tuple[str, Any]]
    if isinstance(raw, list):
        entries = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise PlaybookError("each workbook entry needs a name", field=f"workbook[{i}].name")
            entries.append((item["name"], item))
    elif isinstance(raw, dict):
        entries = [(str(k), v) for k, v in raw.items()]
    else:
        raise PlaybookError("workbook must be a list of {name, tool}", field="workbook")
    tasks: dict[str, dict[str, Any]] = {}
    for name, item in entries:
        if name in tasks:
            raise PlaybookError(f"duplicate workbook task {name!r}", field=f"workbook.{name}")
        tool = item.get("tool") if isinstance(item, dict) else None
        if not isinstance(tool, dict) or not isinstance(tool.get("kind"), str):
            raise PlaybookError(
                "a workbook task needs a tool mapping with a kind", field=f"workbook.{name}.tool"
            )
        if tool["kind"] == "workbook":
            raise PlaybookError(
                "a workbook task cannot call another workbook task", field=f"workbook.{name}.tool.kind"
            )
        tasks[name] = tool
    return tasks


def _step(raw: Any, index: int, workbook: dict[str, dict[str, Any]]) -> Step:
    if not isinstance(raw, dict):
        raise PlaybookError(
            "each workflow entry must be a mapping with a 'step' name", field=f"workflow[{index}]"
        )
    name = raw.get("step")
    if not isinstance(name, str) or not name:
        raise PlaybookError("each workflow entry needs a 'step' name", field=f"workflow[{index}].step")
    if "type" in raw and "tool" not in raw:
        raise PlaybookError(
            "'type' is the v1 step syntax; declare the tool as tool: {kind: ...}", step=name, field="type"
        )
    desc = raw.get("desc")
    spec = _mapping(raw.get("spec"))
    if "admit" in _mapping(spec.get("policy")):
        raise PlaybookError(
            "spec.policy.admit is not supported; guard the step with 'when' or with a 'when' on the arcs into it",
            step=name,
            field="spec.policy.admit",
        )
    return Step(
        name=name,
        tasks=_tasks(raw.get("tool"), name, workbook),
        args=_inputs(raw, name, ""),
        when=_condition(raw.get("when"), name, "when"),
        next=_next(raw.get("next"), name, spec),
        loop=_loop(raw.get("loop"), name),
        set=_scoped_set(raw, name, "set", allowed=frozenset({"ctx", "vars"})),
        desc=desc if isinstance(desc, str) else None,
        timeout=_timeout(raw.get("timeout", spec.get("timeout")), name),
    )


#: ``timeout`` units: a bare number is seconds; ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``
_TIMEOUT_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def _timeout(raw: Any, step: str) -> float | None:
    """A step's timeout in seconds: a positive number, or a string with a unit (ms, s, m, h)."""
    if raw is None:
        return None
    value: float | None = None
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip().lower()
        unit = next((u for u in ("ms", "s", "m", "h") if text.endswith(u)), "")
        try:
            value = float(text[: len(text) - len(unit)]) * _TIMEOUT_UNITS.get(unit, 1.0)
        except ValueError:
            value = None
    if value is None or not 0 < value < 7 * 86400:
        raise PlaybookError(
            f"timeout must be a positive number of seconds (or '30s', '2m', '500ms') under 7 days, got {raw!r}",
            step=step,
            field="timeout",
        )
    return value


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _inputs(raw: dict[str, Any], step: str, prefix: str) -> dict[str, Any]:
    """Merge ``args:`` (earlier form) and ``input:`` (current form) into one mapping."""
    merged: dict[str, Any] = {}
    for key in ("args", "input"):
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise PlaybookError(f"{key} must be a mapping", step=step, field=f"{prefix}{key}")
        merged.update({str(k): v for k, v in value.items()})
    return merged


def _condition(value: Any, step: str, field: str) -> str | None:
    """A ``when``/``expr``: None or YAML true always holds; other scalars become expressions."""
    if value is None or value is True:
        return None
    if value is False:
        return "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise PlaybookError("a condition must be a string or boolean", step=step, field=field)


def _tasks(raw: Any, step: str, workbook: dict[str, dict[str, Any]]) -> list[TaskSpec]:
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
    args = _inputs(raw, step, f"{field}.")
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
        args = {**_inputs(target, step, f"workbook.{ref}.tool."), **args}
        rules = rules or _rules(target, step, f"workbook.{ref}")
        config = _config(target)
        config["workbook"] = ref
    if args:
        config["args"] = args
    return TaskSpec(name=label, kind=kind, config=config, rules=rules)


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
            when = _condition(item.get("when", item.get("expr")), step, f"{where}[{i}].when")
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
    scoped = _scoped_set(body, step, f"{field}.set", allowed=_SCOPES)
    return Rule(
        do=do,
        when=when,
        attempts=attempts,
        backoff=backoff,
        delay=float(delay) if delay is not None else None,
        to=to if isinstance(to, str) else None,
        set=scoped or None,
    )


def _scoped_set(raw: dict[str, Any], step: str, field: str, *, allowed: frozenset[str]) -> dict[str, Any]:
    """Merge ``set`` / ``set_ctx`` / ``set_vars`` / ``set_iter`` into ``{"scope.key": value}``."""
    scoped: dict[str, Any] = {}
    for key, scope in _RULE_SET_KEYS.items():
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise PlaybookError(f"{key} must be a mapping", step=step, field=field if key == "set" else key)
        for name, item in value.items():
            target = f"{scope}.{name}" if scope else str(name)
            if "." not in target:
                target = f"ctx.{target}"
            head = target.split(".", 1)[0]
            if head not in allowed or target.endswith("."):
                raise PlaybookError(
                    f"cannot set {target!r}; writable scopes here are {', '.join(sorted(allowed))}",
                    step=step,
                    field=f"{field}.{name}",
                )
            scoped[target] = item
    return scoped


def _next(raw: Any, step: str, step_spec: dict[str, Any]) -> Next | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return Next(mode=_earlier_mode(step, step_spec, []), arcs=[Arc(step=raw)])
    if isinstance(raw, list):
        arcs = [_arc(item, step, f"next[{i}]") for i, item in enumerate(raw)]
        return Next(mode=_earlier_mode(step, step_spec, arcs), arcs=arcs)
    if isinstance(raw, dict) and "arcs" in raw:
        mode = _mapping(raw.get("spec")).get("mode", "exclusive")
        if mode not in ("exclusive", "inclusive"):
            raise PlaybookError(
                f"next mode must be exclusive or inclusive, got {mode!r}", step=step, field="next.spec.mode"
            )
        items = raw["arcs"]
        if not isinstance(items, list):
            raise PlaybookError("next.arcs must be a list", step=step, field="next.arcs")
        return Next(mode=mode, arcs=[_arc(item, step, f"next[{i}]") for i, item in enumerate(items)])
    if isinstance(raw, dict) and "step" in raw:
        arc = _arc(raw, step, "next")
        return Next(mode=_earlier_mode(step, step_spec, [arc]), arcs=[arc])
    raise PlaybookError(
        "next must be a step name, a list of {step, when, args}, or {spec: {mode}, arcs: [...]}",
        step=step,
        field="next",
    )


def _earlier_mode(step: str, step_spec: dict[str, Any], arcs: list[Arc]) -> Any:
    mode = step_spec.get("next_mode")
    if mode is None:
        return "exclusive" if any(arc.when is not None for arc in arcs) else "inclusive"
    if mode not in ("exclusive", "inclusive"):
        raise PlaybookError(
            f"next_mode must be exclusive or inclusive, got {mode!r}", step=step, field="spec.next_mode"
        )
    return mode


def _arc(raw: Any, step: str, field: str) -> Arc:
    if isinstance(raw, str):
        return Arc(step=raw)
    if not isinstance(raw, dict) or not isinstance(raw.get("step"), str):
        raise PlaybookError("an arc needs a target 'step'", step=step, field=field)
    return Arc(
        step=raw["step"],
        when=_condition(raw.get("when"), step, f"{field}.when"),
        args=_inputs(raw, step, f"{field}."),
        set=_scoped_set(raw, step, f"{field}.set", allowed=frozenset({"ctx", "vars"})),
    )


def _loop(raw: Any, step: str) -> Loop | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise PlaybookError("loop must be a mapping with in and iterator", step=step, field="loop")
    if raw.get("in") is None:
        raise PlaybookError("loop needs 'in' (the collection to iterate)", step=step, field="loop.in")
    iterator = raw.get("iterator")
    if not isinstance(iterator, str) or not iterator.isidentifier():
        raise PlaybookError(
            "loop needs 'iterator' (a name for the current item)", step=step, field="loop.iterator"
        )
    spec = _mapping(raw.get("spec"))
    mode = spec.get("mode", raw.get("mode", "sequential"))
    if mode not in ("sequential", "parallel"):
        raise PlaybookError(
            f"loop mode must be sequential or parallel, got {mode!r}", step=step, field="loop.spec.mode"
        )
    max_in_flight = spec.get("max_in_flight", raw.get("max_in_flight"))
    if max_in_flight is not None and (not isinstance(max_in_flight, int) or max_in_flight < 1):
        raise PlaybookError(
            "max_in_flight must be a positive integer", step=step, field="loop.spec.max_in_flight"
        )
    return Loop(items=raw["in"], iterator=iterator, mode=mode, max_in_flight=max_in_flight)
