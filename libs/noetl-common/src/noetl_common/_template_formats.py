"""printf-style ``%`` and ``str.format`` in templates: refused before they build too much text."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from string import Formatter
from typing import Any

from jinja2.sandbox import SandboxedEscapeFormatter, SandboxedFormatter

from ._template_budget import Budget, active
from ._template_measure import text_size

_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")


def _number(digits: str, budget: Budget) -> int:
    # nine digits already pass any limit; int() of more could itself be slow
    return int(digits) if len(digits) < 10 else budget.max_size + 1


def check_percent(budget: Budget, template: str, values: Any) -> None:
    """Refuse ``template % values`` whose widths, precisions and values would build too much."""
    size = len(template)
    star = False
    for match in _PERCENT_SPEC.finditer(template):
        for group in match.groups():
            if group == "*":
                star = True
            elif group:
                size += _number(group, budget)
    parts = (
        values.values() if isinstance(values, Mapping) else values if isinstance(values, tuple) else (values,)
    )
    for part in parts:
        size += text_size(part, budget)
        if star and isinstance(part, int):
            size += max(part, 0)
    budget.fits(size)


class _FieldSizes(Formatter):
    """Measures each ``str.format`` field before it is formatted (mixed in before a sandboxed formatter)."""

    _size = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self._size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> Any:
        budget = active()
        size = text_size(value, budget)
        match = _FORMAT_SPEC.match(format_spec)
        if match is not None:
            size += sum(_number(group, budget) for group in match.groups() if group)
        self._size += size
        budget.fits(self._size)
        return super().format_field(value, format_spec)


class MeasuringFormatter(_FieldSizes, SandboxedFormatter):
    """The sandbox's ``str.format``, every field measured."""


class MeasuringEscapeFormatter(_FieldSizes, SandboxedEscapeFormatter):
    """The sandbox's ``Markup.format``, every field measured."""
