"""The keys each part of a playbook takes, both syntax generations: the one table to extend.

A key the language learns is added here (and read by the parser or the worker); any other
key is reported with the step and the field that holds it. ``NOETL_DSL_UNKNOWN_KEYS`` of the
control-api decides whether registration refuses it (``error``, the default) or logs it
and goes on (``warn``, for migrating playbooks written for a looser parser).
"""

from __future__ import annotations

from typing import Any, Literal

#: ``error`` refuses, ``warn`` lists them on the playbook (``warnings``), ``ignore`` does not look
#: (a playbook read back from the catalog was checked when it was registered).
UnknownKeys = Literal["error", "warn", "ignore"]

_RULE_SET = frozenset({"set", "set_ctx", "set_vars", "set_iter"})
_THEN = frozenset({"do", "attempts", "backoff", "delay", "to"}) | _RULE_SET

ROOT = frozenset(
    {"apiVersion", "kind", "metadata", "executor", "workload", "workbook", "workflow", "timeout", "keychain"}
)
#: ``runtime`` / ``plugin`` / ``capabilities``: the WASM opt-in; ``profile`` / ``version`` /
#: ``requires``: upstream's declarations, accepted and not acted on.
EXECUTOR = frozenset({"runtime", "plugin", "capabilities", "profile", "version", "requires", "spec"})
EXECUTOR_SPEC = frozenset({"entry_step", "final_step"})
WORKBOOK_ENTRY = frozenset({"name", "tool", "assert", "desc"})
STEP = frozenset(
    {"step", "desc", "spec", "tool", "next", "loop", "input", "args", "when", "set", "set_ctx", "set_vars"}
    | {"timeout"}
)
STEP_SPEC = frozenset({"policy", "timeout", "next_mode"})
STEP_POLICY = frozenset({"admit"})
ADMIT = frozenset({"mode", "rules"})
ADMIT_RULE = frozenset({"when", "then", "else"})
ADMIT_THEN = frozenset({"allow"})
NEXT = frozenset({"spec", "arcs"})
NEXT_SPEC = frozenset({"mode", "on_no_match"})
ARC = frozenset({"step", "when", "args", "input", "set", "set_ctx", "set_vars"})
LOOP = frozenset({"in", "iterator", "spec", "mode", "max_in_flight"})
LOOP_SPEC = frozenset({"mode", "max_in_flight", "policy"})
#: ``exec: distributed | local``: every iteration here is its own command, so either reads the same
LOOP_POLICY = frozenset({"exec"})
#: Keys of every task, whatever its kind (``assert`` and ``desc`` are documentation; ``output`` is
#: ``select`` / ``store`` as a mapping, the wasm tool's format as a string).
TASK = frozenset({"kind", "name", "desc", "spec", "input", "args", "eval", "auth", "assert", "output"})
TASK_SPEC = frozenset({"policy", "timeout"})
TASK_POLICY = frozenset({"rules"})
#: A rule: ``when`` (``expr`` earlier) with ``then``, or ``else``; the earlier form writes the
#: directive inline instead of under ``then``.
RULE = frozenset({"when", "expr", "then", "else"}) | _THEN
ELSE = frozenset({"then"}) | _THEN
THEN = _THEN
_PG_CONNECTION = frozenset(
    {"dsn", "connection_string", "url", "connection", "db_host", "host", "hostname", "db_port", "port"}
    | {"db_user", "user", "username", "db_password", "password", "db_name", "dbname", "database", "db"}
    | {"sslmode", "db_sslmode"}
)
#: Each kind's own keys, beside :data:`TASK`: what its tool on the worker reads. A kind that is
#: not listed (``agent``) is not checked.
KIND: dict[str, frozenset[str]] = {
    "python": frozenset({"code", "code_b64", "code_base64", "libs"}),
    "http": frozenset({"url", "endpoint", "method", "headers", "params", "json", "data", "body", "timeout"})
    | {"follow_redirects", "verify", "retry"},  # retry: pagination (next_call / collect)
    "postgres": frozenset({"command", "query", "sql", "params", "autocommit", "timeout"}) | _PG_CONNECTION,
    "duckdb": frozenset({"command", "query", "sql", "params", "database", "db_path", "path", "read_only"}),
    "nats": frozenset({"subject", "stream", "headers", "timeout", "jetstream", "msg_id", "data", "payload"})
    | {"message", "url", "nats_url", "servers", "server", "user", "password", "token", "creds", "nkey"},
    "secrets": frozenset({"provider", "credential", "name", "key", "env"}),
    "playbook": frozenset({"path", "version", "return_step", "task", "wait"}),
    "workbook": frozenset({"task", "workbook"}),
    "noop": frozenset(),
    "wasm": frozenset({"plugin", "capabilities", "entry", "format", "output"}),
    "system_cleanup": frozenset({"limit"}),
}
#: Why a key that playbooks are known to carry is refused, beside the list of known keys.
HINTS: dict[str, str] = {
    "case": "route with next.arcs[].when and handle a task's outcome with spec.policy.rules",
    "retry": "retry a task with spec.policy.rules: [{when: ..., then: {do: retry, attempts, backoff, delay}}]",
    "type": "declare the tool as tool: {kind: ...}",
}

Finding = tuple[str | None, str, str]  # (step, field, message)


def unknown_keys(doc: dict[str, Any]) -> list[Finding]:
    """Every key of ``doc`` (a parsed playbook document) that no table above holds."""
    found: list[Finding] = []
    _check(found, None, "", doc, ROOT)
    executor = doc.get("executor")
    if isinstance(executor, dict):
        _check(found, None, "executor.", executor, EXECUTOR)
        _check(found, None, "executor.spec.", executor.get("spec"), EXECUTOR_SPEC)
    workbook = doc.get("workbook")
    for i, entry in enumerate(workbook if isinstance(workbook, list) else []):
        _check(found, None, f"workbook[{i}].", entry, WORKBOOK_ENTRY)
        if isinstance(entry, dict):
            _task(found, None, f"workbook[{i}].tool.", entry.get("tool"))
    workflow = doc.get("workflow")
    for raw in workflow if isinstance(workflow, list) else []:
        if isinstance(raw, dict) and isinstance(raw.get("step"), str):
            _step(found, raw["step"], raw)
    return found


def _check(found: list[Finding], step: str | None, prefix: str, raw: Any, known: frozenset[str]) -> None:
    if not isinstance(raw, dict):
        return
    for key in raw:
        if key in known:
            continue
        hint = HINTS.get(str(key))
        takes = f"{prefix.rstrip('.') or 'the playbook root'} takes {', '.join(sorted(known)) or 'no keys'}"
        found.append((step, f"{prefix}{key}", f"unknown key {key!r}; {hint or takes}"))


def _step(found: list[Finding], step: str, raw: dict[str, Any]) -> None:
    _check(found, step, "", raw, STEP)
    spec = raw.get("spec")
    _check(found, step, "spec.", spec, STEP_SPEC)
    policy = spec.get("policy") if isinstance(spec, dict) else None
    _check(found, step, "spec.policy.", policy, STEP_POLICY)
    admit = policy.get("admit") if isinstance(policy, dict) else None
    _check(found, step, "spec.policy.admit.", admit, ADMIT)
    rules = admit.get("rules") if isinstance(admit, dict) else None
    for i, rule in enumerate(rules if isinstance(rules, list) else []):
        where = f"spec.policy.admit.rules[{i}]."
        _check(found, step, where, rule, ADMIT_RULE)
        if isinstance(rule, dict):
            body = rule.get("else") if "else" in rule else rule
            _check(
                found, step, f"{where}then.", body.get("then") if isinstance(body, dict) else None, ADMIT_THEN
            )
    loop = raw.get("loop")
    _check(found, step, "loop.", loop, LOOP)
    loop_spec = loop.get("spec") if isinstance(loop, dict) else None
    _check(found, step, "loop.spec.", loop_spec, LOOP_SPEC)
    _check(
        found,
        step,
        "loop.spec.policy.",
        loop_spec.get("policy") if isinstance(loop_spec, dict) else None,
        LOOP_POLICY,
    )
    _next(found, step, raw.get("next"))
    tool = raw.get("tool")
    if isinstance(tool, dict):
        _task(found, step, "tool.", tool)
    for i, item in enumerate(tool if isinstance(tool, list) else []):
        if isinstance(item, dict) and "kind" not in item and len(item) == 1:
            label, body = next(iter(item.items()))
            _task(found, step, f"tool[{i}].{label}.", body)
        else:
            _task(found, step, f"tool[{i}].", item)


def _next(found: list[Finding], step: str, raw: Any) -> None:
    arcs: Any = []
    if isinstance(raw, dict) and "arcs" in raw:
        _check(found, step, "next.", raw, NEXT)
        _check(found, step, "next.spec.", raw.get("spec"), NEXT_SPEC)
        arcs = raw["arcs"]
    elif isinstance(raw, list):
        arcs = raw
    elif isinstance(raw, dict):
        arcs = [raw]
    for i, arc in enumerate(arcs if isinstance(arcs, list) else []):
        _check(found, step, f"next[{i}].", arc, ARC)


def _task(found: list[Finding], step: str | None, prefix: str, raw: Any) -> None:
    if not isinstance(raw, dict):
        return
    kind = raw.get("kind")
    own = KIND.get(kind) if isinstance(kind, str) else None
    if own is not None:
        _check(found, step, prefix, raw, TASK | own)
    spec = raw.get("spec")
    _check(found, step, f"{prefix}spec.", spec, TASK_SPEC)
    policy = spec.get("policy") if isinstance(spec, dict) else None
    _check(found, step, f"{prefix}spec.policy.", policy, TASK_POLICY)
    rules_of = {
        f"{prefix}eval": raw.get("eval"),
        f"{prefix}spec.policy.rules": policy.get("rules") if isinstance(policy, dict) else None,
    }
    for where, rules in rules_of.items():
        for i, rule in enumerate(rules if isinstance(rules, list) else []):
            _check(found, step, f"{where}[{i}].", rule, RULE)
            if not isinstance(rule, dict):
                continue
            _check(found, step, f"{where}[{i}].then.", rule.get("then"), THEN)
            otherwise = rule.get("else")
            _check(found, step, f"{where}[{i}].else.", otherwise, ELSE)
            if isinstance(otherwise, dict):
                _check(found, step, f"{where}[{i}].else.then.", otherwise.get("then"), THEN)
