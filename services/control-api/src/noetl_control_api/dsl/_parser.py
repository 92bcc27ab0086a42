"""YAML text → :class:`Playbook`, accepting both syntax generations of ``noetl.io/v2``.

Current form: ``next: {spec: {mode}, arcs}``, pipeline items ``- name: x`` + ``kind``,
``input:``, ``spec.policy.rules``, ``set: {ctx.k: ...}``. Earlier form: ``next:`` list or
string, ``spec.next_mode``, step ``when``, ``eval: [{expr, do}, {else}]``,
``set_ctx / set_vars / set_iter``, ``args:``. Everything below the parser sees one model.
"""

from __future__ import annotations

from typing import Any

import yaml
from noetl_common import tree_depths

from ._admit import admit_rules
from ._errors import PlaybookError
from ._fields import condition, inputs, mapping, scoped_set
from ._keychain import keychain_block
from ._keys import UnknownKeys
from ._keys import unknown_keys as unknown_keys_of
from ._model import Playbook, Step
from ._routing import loop_of, next_of
from ._tasks import tool_tasks
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
#: ``timeout`` units: a bare number is seconds; ``"500ms"``, ``"30s"``, ``"2m"``, ``"1h"``
_TIMEOUT_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: A step's ``timeout`` is under 7 days; a playbook's (the whole execution) under 366.
STEP_TIMEOUT_MAX = 7 * 86400.0
PLAYBOOK_TIMEOUT_MAX = 366 * 86400.0


def parse_playbook(text: str, *, unknown_keys: UnknownKeys = "error") -> Playbook:
    """Parse and validate playbook YAML; raise :class:`PlaybookError` naming step and field.

    ``unknown_keys``: what a key no table of ``_keys`` holds does (see :data:`UnknownKeys`).
    """
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
    entry_step, final_step = _entry_and_final(executor, steps)
    playbook = Playbook(
        name=name,
        path=path,
        steps=steps,
        workload={str(k): v for k, v in workload.items()},
        executor=executor,
        api_version=API_VERSION,
        timeout=_timeout(doc.get("timeout"), None, PLAYBOOK_TIMEOUT_MAX),
        entry_step=entry_step,
        final_step=final_step,
        keychain=keychain_block(doc.get("keychain")),
    )
    validate(playbook)
    if unknown_keys != "ignore":
        for step, field, message in unknown_keys_of(doc):
            if unknown_keys == "error":
                raise PlaybookError(message, step=step, field=field)
            playbook.warnings.append(str(PlaybookError(message, step=step, field=field)))
    return playbook


def _entry_and_final(executor: dict[str, Any] | None, steps: list[Step]) -> tuple[str, str | None]:
    """``executor.spec.entry_step`` (else ``start`` when there is one, else the first step) and
    ``executor.spec.final_step``; each must name a step of the workflow."""
    spec = (executor or {}).get("spec")
    if spec is not None and not isinstance(spec, dict):
        raise PlaybookError("executor.spec must be a mapping", field="executor.spec")
    spec = spec or {}
    names = [step.name for step in steps]
    found: dict[str, str | None] = {}
    for key in ("entry_step", "final_step"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, str) or value not in names):
            raise PlaybookError(
                f"{key} {value!r} is not a step of the workflow", field=f"executor.spec.{key}"
            )
        found[key] = value
    entry = found["entry_step"] or ("start" if "start" in names else names[0])
    return entry, found["final_step"]


def _lower_wasm(executor: dict[str, Any] | None, steps: list[Step]) -> None:
    """Lower both WASM opt-ins to one task shape (architecture.md §8).

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
    for nodes, depth in enumerate(tree_depths(doc), start=1):
        if nodes > MAX_NODES:
            raise PlaybookError(f"the playbook expands to more than {MAX_NODES} YAML nodes")
        if depth > MAX_DEPTH:
            raise PlaybookError(f"the playbook nests deeper than {MAX_DEPTH} levels")


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
    spec = mapping(raw.get("spec"))
    return Step(
        name=name,
        tasks=tool_tasks(raw.get("tool"), name, workbook),
        args=inputs(raw, name, ""),
        when=condition(raw.get("when"), name, "when"),
        next=next_of(raw.get("next"), name, spec),
        loop=loop_of(raw.get("loop"), name),
        set=scoped_set(raw, name, "set", allowed=frozenset({"ctx", "vars"})),
        admit=admit_rules(mapping(spec.get("policy")).get("admit"), name),
        desc=desc if isinstance(desc, str) else None,
        timeout=_timeout(raw.get("timeout", spec.get("timeout")), name, STEP_TIMEOUT_MAX),
    )


def _timeout(raw: Any, step: str | None, maximum: float) -> float | None:
    """A step's (or with ``step`` None the playbook's) timeout in seconds: a positive number, or
    a string with a unit (ms, s, m, h), below ``maximum``."""
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
    if value is None or not 0 < value < maximum:
        raise PlaybookError(
            f"timeout must be a positive number of seconds (or '30s', '2m', '500ms') under"
            f" {maximum / 86400:g} days, got {raw!r}",
            step=step,
            field="timeout",
        )
    return value
