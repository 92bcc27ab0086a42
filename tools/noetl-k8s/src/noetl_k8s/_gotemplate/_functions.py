"""The Helm and Sprig functions the chart calls, by name."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import yaml

from ._values import ChartFailed, go_str, truthy


def _indent(n: Any, text: Any) -> str:
    pad = " " * int(n)
    return "\n".join(pad + line for line in str(text).split("\n"))


def _printf(fmt: str, *args: Any) -> str:
    parts = iter(args)

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        value = next(parts)
        if match.group(0) == "%d":
            return str(int(value))
        return go_str(value)

    return re.sub(r"%%|%[sdv]", sub, fmt)


def _plain(value: Any) -> Any:
    """Values as YAML data again: float64s that hold integers print as integers (as in Helm)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _to_yaml(value: Any) -> str:
    """Helm's ``toYaml``: sorted keys, block style, no trailing newline."""
    text = yaml.safe_dump(_plain(value), sort_keys=True, default_flow_style=False)
    return text.removesuffix("\n...\n").rstrip("\n")


def _to_int(value: Any) -> int:
    if isinstance(value, str):
        return int(value) if value.strip().lstrip("-").isdigit() else 0
    return int(value or 0)


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "quote": lambda *v: " ".join('"' + go_str(x).replace("\\", "\\\\").replace('"', '\\"') + '"' for x in v),
    "nindent": lambda n, text: "\n" + _indent(n, text),
    "indent": _indent,
    "printf": _printf,
    "trunc": lambda n, s: str(s)[: int(n)] if int(n) >= 0 else str(s)[int(n) :],
    "trimSuffix": lambda suffix, s: str(s)[: -len(suffix)] if suffix and str(s).endswith(suffix) else str(s),
    "dict": lambda *kv: {str(kv[i]): kv[i + 1] for i in range(0, len(kv), 2)},
    "list": lambda *items: list(items),
    "append": lambda items, item: [*items, item],
    "ternary": lambda a, b, cond: a if truthy(cond) else b,
    "contains": lambda sub, s: str(sub) in str(s),
    "toString": go_str,
    "add": lambda *nums: sum(_to_int(n) for n in nums),
    "int": _to_int,
    "not": lambda v: not truthy(v),
    "eq": lambda a, *bs: any(a == b for b in bs),
    "ne": lambda a, b: a != b,
    "and": lambda *vs: next((v for v in vs if not truthy(v)), vs[-1]),
    "or": lambda *vs: next((v for v in vs if truthy(v)), vs[-1]),
    "default": lambda d, v=None: v if truthy(v) else d,
    "empty": lambda v: not truthy(v),
    "hasKey": lambda d, k: isinstance(d, dict) and k in d,
    "lower": lambda s: str(s).lower(),
    "upper": lambda s: str(s).upper(),
    "join": lambda sep, items: str(sep).join(go_str(x) for x in items or []),
    "toYaml": _to_yaml,
    "replace": lambda old, new, s: str(s).replace(old, new),
    "index": lambda d, *keys: _index(d, keys),
    "fail": lambda message: _fail(message),
}


def _fail(message: Any) -> Any:
    raise ChartFailed(go_str(message))


def _index(value: Any, keys: tuple[Any, ...]) -> Any:
    for key in keys:
        value = value[int(key)] if isinstance(value, list) else value[key]
    return value
