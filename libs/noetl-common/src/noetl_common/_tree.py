"""Walk a decoded document (JSON or YAML: dicts, lists, scalars) without recursion, so a
hostile nesting cannot exhaust the stack; callers bound what they see."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


def tree_depths(value: Any) -> Iterator[int]:
    """The depth of every node of ``value`` (0 for ``value`` itself; a dict's values and a
    list's items one deeper), depth first. Stop iterating to stop the walk."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        yield depth
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
