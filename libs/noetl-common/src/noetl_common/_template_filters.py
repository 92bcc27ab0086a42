"""Jinja2's filters wrapped to charge what they iterate and measure what they print."""

from __future__ import annotations

from collections.abc import Callable
from functools import update_wrapper
from typing import Any

from jinja2.filters import make_attrgetter

from ._template_budget import Budget, active
from ._template_formats import check_percent
from ._template_measure import Args, account, arg, iterate, joined_size, materialize, replaced_size, text_size

#: (budget, what the filter gets before its value, value, other args, kwargs) → the call's
#: new value, args and kwargs, or an error when it would cost too much.
_FilterCheck = Callable[[Budget, Args, Any, Args, dict[str, Any]], tuple[Any, Args, dict[str, Any]]]

#: Filters that cost O(1) whatever their input: left as Jinja2 has them.
PLAIN_FILTERS = frozenset(
    {"abs", "attr", "count", "d", "default", "filesizeformat", "first", "float", "int", "last", "length"}
    | {"random", "round"}
)
#: Filters that go through every item of their input.
_ITERATING_FILTERS = frozenset(
    {"batch", "dictsort", "groupby", "items", "list", "map", "max", "min", "reject", "rejectattr"}
    | {"reverse", "select", "selectattr", "slice", "sort", "sum", "unique", "xmlattr"}
)


def _filter_center(
    budget: Budget, lead: Args, value: Any, args: Args, kwargs: dict[str, Any]
) -> tuple[Any, Args, dict[str, Any]]:
    width = arg(args, kwargs, 0, "width", 80)
    if isinstance(width, int):
        budget.fits(width)
    return value, args, kwargs


def _filter_indent(
    budget: Budget, lead: Args, value: Any, args: Args, kwargs: dict[str, Any]
) -> tuple[Any, Args, dict[str, Any]]:
    width = arg(args, kwargs, 0, "width", 4)
    if isinstance(width, int):
        budget.fits(width)
    indent = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
    if isinstance(value, str):
        budget.fits(len(value) + (len(value.splitlines()) + 1) * (indent + 1))
    return value, args, kwargs


def _filter_wordwrap(
    budget: Budget, lead: Args, value: Any, args: Args, kwargs: dict[str, Any]
) -> tuple[Any, Args, dict[str, Any]]:
    width = arg(args, kwargs, 0, "width", 79)
    wrap = arg(args, kwargs, 2, "wrapstring", None)
    if isinstance(value, str) and isinstance(width, int) and isinstance(wrap, str):
        # textwrap breaks a line at most at each whitespace and every `width` characters
        spaces = len(value) - len("".join(value.split()))
        breaks = 3 * spaces + len(value) // max(width, 1) + 2
        budget.fits(len(value) + breaks * len(wrap))
    return value, args, kwargs


def _filter_format(
    budget: Budget, lead: Args, value: Any, args: Args, kwargs: dict[str, Any]
) -> tuple[Any, Args, dict[str, Any]]:
    if isinstance(value, str):
        check_percent(budget, value, kwargs or args)
    return value, args, kwargs


def _filter_replace(
    budget: Budget, lead: Args, value: Any, args: Args, kwargs: dict[str, Any]
) -> tuple[Any, Args, dict[str, Any]]:
    old, new = arg(args, kwargs, 0, "old", None), arg(args, kwargs, 1, "new", None)
    if isinstance(value, str) and isinstance(old, str) and isinstance(new, str):
        count = arg(args, kwargs, 2, "count", None)
        budget.fits(replaced_size(value, old, new, -1 if count is None else count))
    return value, args, kwargs


def _filter_join(
    budget: Budget, lead: Args, value: Any, args: Args, kwargs: dict[str, Any]
) -> tuple[Any, Args, dict[str, Any]]:
    items = materialize(value, budget)
    attribute = arg(args, kwargs, 1, "attribute", None)
    if attribute is not None:
        # pick the attribute here, so the sizes below are those of what is joined
        get = make_attrgetter(lead[0].environment, attribute)
        items = [get(item) for item in items]
        args, kwargs = args[:1], {k: v for k, v in kwargs.items() if k != "attribute"}
    budget.fits(joined_size(items, arg(args, kwargs, 0, "d", ""), budget))
    return items, args, kwargs


def _filter_batch(
    budget: Budget, lead: Args, value: Any, args: Args, kwargs: dict[str, Any]
) -> tuple[Any, Args, dict[str, Any]]:
    size = arg(args, kwargs, 0, "linecount", 0)
    if isinstance(size, int):
        budget.fits_items(size)  # the last batch is padded to this size
    return value, args, kwargs


def _filter_slice(
    budget: Budget, lead: Args, value: Any, args: Args, kwargs: dict[str, Any]
) -> tuple[Any, Args, dict[str, Any]]:
    slices = arg(args, kwargs, 0, "slices", 0)
    if isinstance(slices, int):
        budget.charge(max(slices, 0))  # one pass per slice, even an empty one
    return value, args, kwargs


def _filter_tojson(
    budget: Budget, lead: Args, value: Any, args: Args, kwargs: dict[str, Any]
) -> tuple[Any, Args, dict[str, Any]]:
    indent = arg(args, kwargs, 0, "indent", None)
    budget.fits(text_size(value, budget, indent if isinstance(indent, int) else 0), "the JSON text", False)
    return value, args, kwargs


def _filter_pprint(
    budget: Budget, lead: Args, value: Any, args: Args, kwargs: dict[str, Any]
) -> tuple[Any, Args, dict[str, Any]]:
    budget.fits(text_size(value, budget, 1), "the text of a value", False)
    return value, args, kwargs


_FILTER_CHECKS: dict[str, _FilterCheck] = {
    "center": _filter_center,
    "indent": _filter_indent,
    "wordwrap": _filter_wordwrap,
    "format": _filter_format,
    "replace": _filter_replace,
    "join": _filter_join,
    "batch": _filter_batch,
    "slice": _filter_slice,
    "tojson": _filter_tojson,
    "pprint": _filter_pprint,
}
#: Filters whose check measures or materializes the value itself.
_SELF_MEASURED = frozenset({"join", "tojson", "pprint"})


def budgeted_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """Jinja2's filter ``name`` charged to the active budget: its input counted or measured, its
    arguments checked, what it built accounted."""
    # a filter taking the context, eval context or environment gets it before the value
    at = 0 if getattr(func, "jinja_pass_arg", None) is None else 1
    iterating = name in _ITERATING_FILTERS
    measured = name in _SELF_MEASURED
    check = _FILTER_CHECKS.get(name)

    def run(*args: Any, **kwargs: Any) -> Any:
        budget = active()
        budget.tick()
        if len(args) > at:
            lead, value, rest = args[:at], args[at], args[at + 1 :]
            if iterating:
                value = iterate(value, budget)
            elif not measured and value.__class__ is not str:
                budget.fits(text_size(value, budget), "the text of a value", False)  # the filter prints it
            if check is not None:
                value, rest, kwargs = check(budget, lead, value, rest, kwargs)
            args = (*lead, value, *rest)
        result = func(*args, **kwargs)
        account(budget, result)
        return result

    return update_wrapper(run, func)  # keeps jinja_pass_arg
