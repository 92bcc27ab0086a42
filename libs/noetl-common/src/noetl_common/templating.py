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

Every call runs under a budget (:class:`TemplateLimits`: iterations, output size, integer
size, wall time); going over raises :class:`TemplateBudgetError` naming the limit. See
``_template_budget`` and ``_template_sandbox`` for how it is kept, docs/security.md §5 for why.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn, TypeVar

import jinja2
import jinja2.meta
from jinja2.runtime import Undefined
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from ._template_budget import (
    ACTIVE,
    DEFAULT_LIMITS,
    Budget,
    TemplateBudgetError,
    TemplateError,
    TemplateLimits,
    tick,
    ticks,
)
from ._template_sandbox import BudgetedEnvironment

__all__ = [
    "DEFAULT_LIMITS",
    "TemplateBudgetError",
    "TemplateError",
    "TemplateLimits",
    "check_syntax",
    "evaluate",
    "has_template",
    "names_read",
    "render",
]

_SINGLE_EXPR = re.compile(r"^\s*\{\{[-+]?(?P<expr>(?:(?!\{\{|\}\}).)*?)[-+]?\}\}\s*$", re.DOTALL)
_FALSE_STRINGS = frozenset({"", "false", "no", "off", "0", "none", "null"})
#: Native results of these types are returned as they are.
_SCALARS = frozenset({str, int, float, bool, type(None)})
#: Strings this long are tracked for sharing in a native result (shorter ones add little).
_SHARED_STRING = 64
_T = TypeVar("_T")


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


class _Environment(BudgetedEnvironment):
    """The budgeted sandbox where mapping keys win over attributes."""

    def getattr(self, obj: Any, attribute: str) -> Any:
        if not next(ticks) & 63:
            tick()
        if obj.__class__ is dict:  # step results and payloads: skip the Mapping ABC check
            if attribute in obj:
                return obj[attribute]
            if attribute == "result":
                return obj
        elif isinstance(obj, Mapping):
            if attribute in obj:
                return obj[attribute]
            if attribute == "result" and not isinstance(obj, _FixedMapping):
                return obj
            if isinstance(obj, _FixedMapping):
                return self.undefined(hint=f"workload has no key {attribute!r}", obj=obj, name=attribute)
        return SandboxedEnvironment.getattr(self, obj, attribute)


_ENV = _Environment(undefined=_Undefined, autoescape=False, keep_trailing_newline=True)


def _compiling(compile: Callable[[], _T]) -> _T:
    """Compile under a budget of its own: folding constants runs filters (``'x' | center(n)``),
    and a fold that is refused is simply left to run time, where the branch may never be taken."""
    token = ACTIVE.set(Budget(DEFAULT_LIMITS))
    try:
        return compile()
    finally:
        ACTIVE.reset(token)


@functools.lru_cache(maxsize=4096)
def _compile_template(source: str) -> jinja2.Template:
    return _compiling(lambda: _ENV.from_string(source))


@functools.lru_cache(maxsize=4096)
def _compile_expression(source: str) -> Any:
    return _compiling(lambda: _ENV.compile_expression(source, undefined_to_none=False))


def has_template(value: str) -> bool:
    """True when ``value`` contains Jinja2 syntax and so needs rendering."""
    return "{{" in value or "{%" in value


def _prepare(context: Mapping[str, Any]) -> dict[str, Any]:
    names = dict(context)
    workload = names.get("workload")
    if isinstance(workload, Mapping) and not isinstance(workload, _FixedMapping):
        names["workload"] = _FixedMapping(workload)
    return names


class _Native:
    """Copies a native result into plain data (undefined → None, marker dicts → dict).

    A result big only because it holds the same list, mapping or long string many times
    (``[rows, rows, ...]``, ``[s] * 100000``) would be encoded at its full size later: it
    is refused once such sharing is seen and its size passes the output limit.
    """

    __slots__ = ("budget", "seen", "shared", "size")

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.seen: set[int] = set()
        self.shared = False
        self.size = 0

    def plain(self, value: Any) -> Any:
        if isinstance(value, Undefined):
            if isinstance(value, _Undefined) and value._strict:
                value._fail()
            return None
        if isinstance(value, dict):
            self._once(value, 2 + len(value))
            return {k: self.plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            self._once(value, 2 + len(value))
            return [self.plain(v) for v in value]
        if isinstance(value, str):
            if len(value) < _SHARED_STRING:
                self._add(len(value))
            else:
                self._once(value, len(value))
            if value.__class__ is not str:
                return str(value)  # ``tojson``'s Markup: a plain string once rendered
        return value

    def _once(self, value: Any, size: int) -> None:
        key = id(value)
        if key in self.seen:
            self.shared = True
        else:
            self.seen.add(key)
        self._add(size)

    def _add(self, size: int) -> None:
        self.size += size
        if self.shared and self.size > self.budget.max_size:
            self.budget.fail(
                f"the value holds the same data many times and would be larger than "
                f"{self.budget.max_size} bytes (NOETL_TEMPLATE_MAX_OUTPUT_BYTES)"
            )


def _plain(value: Any, budget: Budget) -> Any:
    """Strip template-engine types from a native result."""
    if value.__class__ in _SCALARS:
        return value
    return _Native(budget).plain(value)


def _describe(exc: Exception) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return f"undefined name: {exc.message}"
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return f"syntax error: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


def _render_string(text: str, names: dict[str, Any], budget: Budget) -> Any:
    match = _SINGLE_EXPR.match(text)
    try:
        if match is not None:
            return _plain(_compile_expression(match.group("expr"))(**names), budget)
        return _compile_template(text).render(names)
    except TemplateBudgetError as exc:
        raise TemplateBudgetError(f"template {text.strip()!r} failed: {exc.message}", text) from exc
    except TemplateError:
        raise
    except Exception as exc:
        raise TemplateError(f"template {text.strip()!r} failed: {_describe(exc)}", text) from exc


def _render(value: Any, names: dict[str, Any], budget: Budget) -> Any:
    if isinstance(value, str):
        return _render_string(value, names, budget) if has_template(value) else value
    if isinstance(value, Mapping):
        rendered: dict[Any, Any] = {}
        for key, item in value.items():
            try:
                rendered[key] = _render(item, names, budget)
            except TemplateError as exc:
                exc.within(key)
                raise
        return rendered
    if isinstance(value, list | tuple):
        items: list[Any] = []
        for index, item in enumerate(value):
            try:
                items.append(_render(item, names, budget))
            except TemplateError as exc:
                exc.within(index)
                raise
        return items
    return value


def render(value: Any, context: Mapping[str, Any], limits: TemplateLimits = DEFAULT_LIMITS) -> Any:
    """Render every template string inside ``value`` (recursing into dicts and lists).

    A string that is exactly one ``{{ expr }}`` yields the expression's native value;
    other template strings yield ``str``. Raises :class:`TemplateError` naming the
    expression (and, in :attr:`TemplateError.field`, where in ``value`` it sits) on a
    syntax error, a strict undefined name or a failing expression, and
    :class:`TemplateBudgetError` when the call goes over ``limits``.
    """
    budget = Budget(limits)
    token = ACTIVE.set(budget)
    try:
        result = _render(value, _prepare(context), budget)
        budget.finish()
        return result
    finally:
        ACTIVE.reset(token)


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in _FALSE_STRINGS
    return bool(value)


def evaluate(expr: Any, context: Mapping[str, Any], limits: TemplateLimits = DEFAULT_LIMITS) -> bool:
    """Evaluate a condition (``when``, rule ``expr``), written with or without ``{{ }}``.

    Non-string conditions (YAML ``true``) are taken as they are; a string result is
    false when it reads ``""``, ``false``, ``no``, ``off``, ``0``, ``none`` or ``null``.
    Runs under ``limits`` like :func:`render`.
    """
    if not isinstance(expr, str):
        return _truthy(expr)
    budget = Budget(limits)
    token = ACTIVE.set(budget)
    try:
        names = _prepare(context)
        if has_template(expr):
            value = _render_string(expr, names, budget)
        else:
            try:
                value = _plain(_compile_expression(expr)(**names), budget)
            except TemplateBudgetError as exc:
                raise TemplateBudgetError(f"condition {expr.strip()!r} failed: {exc.message}", expr) from exc
            except TemplateError:
                raise
            except Exception as exc:
                raise TemplateError(f"condition {expr.strip()!r} failed: {_describe(exc)}", expr) from exc
        budget.finish()
        return _truthy(value)
    finally:
        ACTIVE.reset(token)


def names_read(value: Any) -> frozenset[str] | None:
    """The top-level names the templates (``{{``, ``{%``) and bare conditions (any other string
    that parses as one: a plain word counts) inside ``value`` may read, recursing as
    :func:`render` does; it may hold names never read, never misses one. Rendering over just
    these names gives what all names give. None when a template does not parse."""
    found: set[str] = set()
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if has_template(item):
                try:
                    found |= jinja2.meta.find_undeclared_variables(_ENV.parse(item))
                except jinja2.TemplateSyntaxError:
                    return None
            elif item.strip():
                try:
                    found |= jinja2.meta.find_undeclared_variables(_ENV.parse("{{ " + item + " }}"))
                except jinja2.TemplateSyntaxError:
                    pass  # not a condition: a condition that does not parse fails as it would anyway
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, list | tuple):
            pending.extend(item)
    return frozenset(found)


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
