"""What a template value costs before it is built: how long its text is, what iterating it charges.

Shared by the sandbox hooks, the method checks and the wrapped filters; every estimate is
from above and stops once it passes the budget's limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Set
from typing import Any, cast

from jinja2.utils import Namespace

from ._template_budget import SLOT_BYTES, Budget, clock

SEQUENCES = (str, bytes, bytearray, list, tuple)
TEXT = (str, bytes, bytearray)
#: Types whose text is short whatever the value (a float prints in at most 24 characters).
_SHORT = frozenset({float, bool, type(None)})
_VIEWS: tuple[type, ...] = (list, tuple, Set, deque, type({}.keys()), type({}.values()), type({}.items()))

Args = tuple[Any, ...]


def text_size(value: Any, budget: Budget, indent: int = 0) -> int:
    """An estimate from above of ``len(str(value))``, without building it; stops past the limit.

    ``indent``: the text is pretty-printed with this indent per level (``tojson``).
    """
    cls = value.__class__
    if cls is str:
        return len(value)
    if cls is int:
        bits: int = value.bit_length()
        return bits // 3 + 2
    if cls in _SHORT:
        return 32
    cap = budget.max_size
    size = 0
    walked = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        children: Iterable[Any]
        if isinstance(item, Mapping):
            children = (part for pair in item.items() for part in pair)
            size += 2 + 2 * len(item)
        elif isinstance(item, _VIEWS):
            children = cast(Iterable[Any], item)
        elif isinstance(item, Namespace):
            children = (object.__getattribute__(item, "_Namespace__attrs"),)  # its repr shows them
        else:
            size += _leaf_size(item)
            children = ()
        size += 2 + depth * indent
        for child in children:
            cls = child.__class__
            # strings and numbers inline: most containers hold nothing else
            if cls is str:
                size += len(child) + 4 + depth * indent
            elif cls is int:
                size += child.bit_length() // 3 + 4 + depth * indent
            elif cls in _SHORT:
                size += 26 + depth * indent
            else:
                stack.append((child, depth + 1))
            if size > cap:
                return size
        walked += 1
        if not walked & 255:
            budget.tick()
    return size


def _leaf_size(item: Any) -> int:
    if isinstance(item, str):
        return len(item) + 4
    if isinstance(item, bytes | bytearray):
        return 4 * len(item) + 3  # every byte may print as \xNN
    if isinstance(item, int):
        return item.bit_length() // 3 + 2
    return 32  # loop, macro and undefined objects: a short repr


def arg(args: Args, kwargs: Mapping[str, Any], index: int, name: str, default: Any) -> Any:
    """A call's argument by position, else by keyword, else ``default``."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def len_or_none(value: Any) -> int | None:
    """``len(value)``, or None for a value without one (a generator)."""
    try:
        return len(value)
    except TypeError:
        return None


def counted(items: Iterable[Any], budget: Budget) -> Iterator[Any]:
    """``items``, one iteration charged per item (an iterable without a length)."""
    for item in items:
        budget.charge(1)
        yield item


def _timed(items: Any, budget: Budget) -> Iterator[Any]:
    deadline, charged = budget.deadline, len(items)
    for index, item in enumerate(items):
        if not index & 7:  # every 8th item: the body's own hooks look at the clock too
            if clock() > deadline:
                budget.late()
            if index >= charged:  # the loop's body made the list longer
                budget.charge(8)
        yield item


class LoopItems:
    """A sized loop iterable, charged up front; keeps ``loop.length`` cheap and the deadline checked."""

    __slots__ = ("_budget", "_items")

    def __init__(self, items: Any, budget: Budget) -> None:
        self._items = items
        self._budget = budget

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return _timed(self._items, self._budget)


def iterate(value: Any, budget: Budget) -> Any:
    """``value`` to be iterated, charged: a sized one by its length now, any other item by item."""
    size = len_or_none(value)
    if size is None:
        return counted(value, budget)
    budget.charge(size)
    return value


def materialize(value: Any, budget: Budget) -> list[Any]:
    """``value``'s items as a list, charged (a method that iterates its argument)."""
    if isinstance(value, list):
        budget.charge(len(value))
        return value
    return list(iterate(value, budget))


def joined_size(items: list[Any], separator: Any, budget: Budget) -> int:
    """The length of ``separator.join(items)``, the items' text measured; stops past the limit."""
    size = len(separator) * max(len(items) - 1, 0) if isinstance(separator, SEQUENCES) else 0
    for item in items:
        size += len(item) if isinstance(item, str | bytes | bytearray) else text_size(item, budget)
        if size > budget.max_size:
            break
    return size


def replaced_size(text: Any, old: Any, new: Any, count: Any) -> int:
    """The length of ``text.replace(old, new, count)``, without building it."""
    hits = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        hits = min(hits, count)
    return len(text) + hits * (len(new) - len(old))


def account(budget: Budget, result: Any) -> None:
    """Count a string or list just built (a list by its references) towards the budget."""
    if isinstance(result, str | bytes | bytearray):
        budget.add_built(len(result))
    elif isinstance(result, list | tuple):
        budget.add_built(len(result) * SLOT_BYTES)
