"""Tool registry: ``kind -> async callable(config, args, ctx) -> result``.

A tool raises to report an error; the pipeline turns the exception into the task's
error outcome (``{message, type}``), so a tool never needs to build events itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from ._python_tool import run_python

#: A tool: rendered task config, the task's inputs, the render context → result.
Tool = Callable[[dict[str, Any], dict[str, Any], Mapping[str, Any]], Awaitable[Any]]


class UnknownToolError(LookupError):
    """No tool is registered for a task's kind on this worker."""


async def run_noop(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """The ``noop`` tool: returns its inputs, or None when it has none."""
    return args or None


class ToolRegistry:
    """Maps a task ``kind`` to the coroutine that runs it."""

    def __init__(self, tools: Mapping[str, Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = dict(tools or {})

    @classmethod
    def default(cls) -> ToolRegistry:
        """The tools this worker ships: ``python`` and ``noop``."""
        return cls({"python": run_python, "noop": run_noop})

    def register(self, kind: str, tool: Tool) -> None:
        """Add or replace the tool for ``kind``."""
        self._tools[kind] = tool

    def get(self, kind: str) -> Tool:
        """The tool for ``kind``; UnknownToolError naming the kind when there is none."""
        try:
            return self._tools[kind]
        except KeyError:
            known = ", ".join(sorted(self._tools)) or "none"
            raise UnknownToolError(f"unknown tool kind {kind!r} (this worker runs: {known})") from None

    def __contains__(self, kind: object) -> bool:
        return kind in self._tools

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._tools))
