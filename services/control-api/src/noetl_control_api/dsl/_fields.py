"""Readers every part of a step shares: inputs, conditions and scoped ``set`` writes."""

from __future__ import annotations

from typing import Any

from ._errors import PlaybookError

_RULE_SET_KEYS = {"set": None, "set_ctx": "ctx", "set_vars": "vars", "set_iter": "iter"}


def mapping(value: Any) -> dict[str, Any]:
    """``value`` when it is a mapping, else an empty one."""
    return value if isinstance(value, dict) else {}


def inputs(raw: dict[str, Any], step: str, prefix: str) -> dict[str, Any]:
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


def condition(value: Any, step: str, field: str) -> str | None:
    """A ``when``/``expr``: None or YAML true always holds; other scalars become expressions."""
    if value is None or value is True:
        return None
    if value is False:
        return "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise PlaybookError("a condition must be a string or boolean", step=step, field=field)


def scoped_set(raw: dict[str, Any], step: str, field: str, *, allowed: frozenset[str]) -> dict[str, Any]:
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
