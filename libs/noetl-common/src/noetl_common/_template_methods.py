"""Methods of builtin types a template may call, checked before they build or walk too much.

Each check gets the budget, the method's owner and its arguments, and returns the arguments
to call it with (an iterable argument materialized once, charged); it raises when the
result would go over the budget.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ._template_budget import Budget
from ._template_measure import TEXT, Args, arg, joined_size, materialize, replaced_size

_MethodCheck = Callable[[Budget, Any, Args, dict[str, Any]], Args]


def _pad(budget: Budget, owner: Any, args: Args, kwargs: dict[str, Any]) -> Args:
    width = arg(args, kwargs, 0, "width", 0)
    if isinstance(owner, TEXT) and isinstance(width, int):
        budget.fits(width)
    return args


def _expandtabs(budget: Budget, owner: Any, args: Args, kwargs: dict[str, Any]) -> Args:
    tabsize = arg(args, kwargs, 0, "tabsize", 8)
    if isinstance(owner, TEXT) and isinstance(tabsize, int):
        tab: Any = "\t" if isinstance(owner, str) else b"\t"
        budget.fits(len(owner) + owner.count(tab) * max(tabsize, 0))
    return args


def _replace(budget: Budget, owner: Any, args: Args, kwargs: dict[str, Any]) -> Args:
    old, new = arg(args, kwargs, 0, "old", None), arg(args, kwargs, 1, "new", None)
    count = arg(args, kwargs, 2, "count", -1)
    if isinstance(owner, TEXT) and isinstance(old, TEXT) and isinstance(new, TEXT):
        budget.fits(replaced_size(owner, old, new, count))
    return args


def _join(budget: Budget, owner: Any, args: Args, kwargs: dict[str, Any]) -> Args:
    if not isinstance(owner, TEXT) or not args:
        return args
    items = materialize(args[0], budget)
    budget.fits(joined_size(items, owner, budget))
    return (items, *args[1:])


def _translate(budget: Budget, owner: Any, args: Args, kwargs: dict[str, Any]) -> Args:
    table = arg(args, kwargs, 0, "table", None)
    if isinstance(owner, str) and isinstance(table, Mapping):
        budget.charge(len(table))
        longest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
        budget.fits(len(owner) * max(longest, 1))
    return args


def _to_bytes(budget: Budget, owner: Any, args: Args, kwargs: dict[str, Any]) -> Args:
    length = arg(args, kwargs, 0, "length", 1)
    if isinstance(owner, int) and isinstance(length, int):
        budget.fits(length)
    return args


def _extend(budget: Budget, owner: Any, args: Args, kwargs: dict[str, Any]) -> Args:
    if not isinstance(owner, list) or not args:
        return args
    items = materialize(args[0], budget)
    budget.fits_items(len(owner) + len(items))
    return (items, *args[1:])


def _grow(budget: Budget, owner: Any, args: Args, kwargs: dict[str, Any]) -> Args:
    if isinstance(owner, list):
        budget.fits_items(len(owner) + 1)
    return args


def _walk_owner(budget: Budget, owner: Any, args: Args, kwargs: dict[str, Any]) -> Args:
    if isinstance(owner, list | tuple | dict):
        budget.charge(len(owner))
    return args


def _walk_argument(budget: Budget, owner: Any, args: Args, kwargs: dict[str, Any]) -> Args:
    if (owner is dict or isinstance(owner, dict)) and args:
        return (entries(args[0], budget), *args[1:])
    return args


def entries(value: Any, budget: Budget) -> Any:
    """What ``dict(value)`` / ``d.update(value)`` goes through, charged: a mapping as it is."""
    if isinstance(value, Mapping):
        budget.charge(len(value))
        return value
    return materialize(value, budget)


METHOD_CHECKS: dict[str, _MethodCheck] = {
    "ljust": _pad,
    "rjust": _pad,
    "center": _pad,
    "zfill": _pad,
    "expandtabs": _expandtabs,
    "replace": _replace,
    "join": _join,
    "translate": _translate,
    "to_bytes": _to_bytes,
    "extend": _extend,
    "append": _grow,
    "insert": _grow,
    "copy": _walk_owner,
    "count": _walk_owner,
    "index": _walk_owner,
    "remove": _walk_owner,
    "sort": _walk_owner,
    "reverse": _walk_owner,
    "update": _walk_argument,
    "fromkeys": _walk_argument,
}
