"""Playbook templates: Jinja2 in a sandbox, with native types and NoETL's undefined rule.

Shared by the orchestrator (step inputs, arc conditions, ``set`` values) and the worker
(task configs, task rules). Rules, from DSL.md:

* A string that is exactly one ``{{ expr }}`` keeps the expression's native type; any
  other string containing template syntax renders to ``str``; other values pass through.
* On a mapping a key wins over a Python attribute (``{{ start.items }}`` is the key), and
  ``{{ x.result }}`` on a mapping without a ``result`` key is the mapping itself, so
  ``{{ start.result.n }}`` and ``{{ start.n }}`` read the same step result.
* Undefined names: a top-level name missing from the context or a missing key of
  ``workload`` was fixed before the run, so it raises :class:`TemplateError`; any other
  miss (a step result key, ``ctx``, ``args``, a step that did not run) is none.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, NoReturn

import jinja2
from jinja2.exceptions import SecurityError
from jinja2.runtime import Undefined, missing
from jinja2.sandbox import SandboxedEnvironment

__all__ = ["TemplateError", "check_syntax", "evaluate", "has_template", "render"]

_SINGLE_EXPR = re.compile(r"^\s*\{\{[-+]?(?P<expr>(?:(?!\{\{|\}\}).)*?)[-+]?\}\}\s*$", re.DOTALL)
MAX_SEQUENCE = 10_000_000
MAX_EXPONENT = 10_000
_FALSE_STRINGS = frozenset({"", "false", "no", "off", "0", "none", "null"})


class TemplateError(ValueError):
    """A template that does not parse, names something fixed that does not exist, or fails."""

    def __init__(self, message: str, expression: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.expression = expression


class _FixedMapping(dict[str, Any]):
    """Marks the workload: a missing key in it is a strict (fixed-before-run) undefined."""


class _Undefined(Undefined):
    """Lenient (none-like, chainable) for run-produced data, strict for fixed names."""

    __slots__ = ("_strict",)

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[jinja2.TemplateRuntimeError] = jinja2.UndefinedError,
    ) -> None:
        super().__init__(hint, obj, name, exc)
        self._strict = obj is missing or isinstance(obj, _FixedMapping)

    def _fail(self) -> NoReturn:
        self._fail_with_undefined_error()

    def __getattr__(self, name: str) -> Any:
        if name[:2] == "__":
            raise AttributeError(name)
        if self._strict:
            self._fail()
        return self

    def __getitem__(self, key: Any) -> Any:
        if self._strict:
            self._fail()
        return self

    def __str__(self) -> str:
        if self._strict:
            self._fail()
        return ""

    def __iter__(self) -> Any:
        if self._strict:
            self._fail()
        return iter(())

    def __len__(self) -> int:
        if self._strict:
            self._fail()
        return 0

    def __bool__(self) -> bool:
        if self._strict:
            self._fail()
        return False

    def __eq__(self, other: object) -> bool:
        if self._strict:
            self._fail()
        return other is None or (isinstance(other, _Undefined) and not other._strict)

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(None)

    def __contains__(self, item: object) -> bool:
        if self._strict:
            self._fail()
        return False

    def __repr__(self) -> str:
        return "Undefined"


class _Environment(SandboxedEnvironment):
    """Sandboxed Jinja2 where mapping keys win over attributes.

    ``*`` and ``**`` are checked so one expression cannot allocate gigabytes in the
    control plane (``{{ 'x' * 10**10 }}``).
    """

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if len(seq) * times > MAX_SEQUENCE:
                        raise SecurityError(f"repetition would build more than {MAX_SEQUENCE} items")
        elif isinstance(right, int) and isinstance(left, int) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is larger than {MAX_EXPONENT}")
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj: Any, attribute: str) -> Any:
        if isinstance(obj, Mapping):
            if attribute in obj:
                return obj[attribute]
            if attribute == "result" and not isinstance(obj, _FixedMapping):
                return obj
            if isinstance(obj, _FixedMapping):
                return self.undefined(hint=f"workload has no key {attribute!r}", obj=obj, name=attribute)
        return super().getattr(obj, attribute)


_ENV = _Environment(undefined=_Undefined, autoescape=False, keep_trailing_newline=True)


@functools.lru_cache(maxsize=4096)
def _compile_template(source: str) -> jinja2.Template:
    return _ENV.from_string(source)


@functools.lru_cache(maxsize=4096)
def _compile_expression(source: str) -> Any:
    return _ENV.compile_expression(source, undefined_to_none=False)


def has_template(value: str) -> bool:
    """True when ``value`` contains Jinja2 syntax and so needs rendering."""
    return "{{" in value or "{%" in value


def _prepare(context: Mapping[str, Any]) -> dict[str, Any]:
    names = dict(context)
    workload = names.get("workload")
    if isinstance(workload, Mapping) and not isinstance(workload, _FixedMapping):
        names["workload"] = _FixedMapping(workload)
    return names


def _plain(value: Any) -> Any:
    """Strip template-engine types from a native result (undefined → None, marker dicts → dict)."""
    if isinstance(value, Undefined):
        if isinstance(value, _Undefined) and value._strict:
            value._fail()
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _describe(exc: Exception) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined name: {exc.message}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _render_string(text: str, names: dict[str, Any]) -> Any:
    match = _SINGLE_EXPR.match(text)
    try:
        if match is not None:
            return _plain(_compile_expression(match.group("expr"))(**names))
        return _compile_template(text).render(names)
    except TemplateError:
        raise
    except Exception as exc:
        raise TemplateError(f"template {text.strip()!r} failed: {_describe(exc)}", text) from exc


def _render(value: Any, names: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _render_string(value, names) if has_template(value) else value
    if isinstance(value, Mapping):
        return {k: _render(v, names) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_render(v, names) for v in value]
    return value


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every template string inside ``value`` (recursing into dicts and lists).

    A string that is exactly one ``{{ expr }}`` yields the expression's native value;
    other template strings yield ``str``. Raises :class:`TemplateError` naming the
    expression on a syntax error, a strict undefined name or a failing expression.
    """
    return _render(value, _prepare(context))


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_STRINGS
    return bool(value)


def evaluate(expr: Any, context: Mapping[str, Any]) -> bool:
    """Evaluate a condition (``when``, rule ``expr``), written with or without ``{{ }}``.

    Non-string conditions (YAML ``true``) are taken as they are; a string result is
    false when it reads ``""``, ``false``, ``no``, ``off``, ``0``, ``none`` or ``null``.
    """
    if not isinstance(expr, str):
        return _truthy(expr)
    names = _prepare(context)
    if has_template(expr):
        return _truthy(_render_string(expr, names))
    try:
        value = _plain(_compile_expression(expr)(**names))
    except Exception as exc:
        raise TemplateError(f"condition {expr.strip()!r} failed: {_describe(exc)}", expr) from exc
    return _truthy(value)


def check_syntax(template: str) -> None:
    """Parse ``template`` without rendering it; raise :class:`TemplateError` if it does not parse.

    A bare condition (no ``{{``) is checked as a Jinja2 expression.
    """
    try:
        if has_template(template):
            match = _SINGLE_EXPR.match(template)
            if match is not None:
                _compile_expression(match.group("expr"))
            else:
                _compile_template(template)
        else:
            _compile_expression(template)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template {template.strip()!r} does not parse: {exc.message}", template) from exc
