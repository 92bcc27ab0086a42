"""Tool registry: ``kind -> async callable(config, args, ctx) -> result``.

A tool raises to report an error; the pipeline turns the exception into the task's
error outcome (``{message, type}``), so a tool never needs to build events itself. A
:class:`ToolError` may carry a ``result`` that rules still see (an http 503 response).
A kind may also have a *helper*: ``result -> dict`` exposed to rules as
``outcome.<kind>.*`` (``outcome.http.status``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from ._python_tool import run_python

#: A tool: rendered task config, the task's inputs, the render context → result.
Tool = Callable[[dict[str, Any], dict[str, Any], Mapping[str, Any]], Awaitable[Any]]
#: A kind helper: the task's result (None when it failed without one) → ``outcome.<kind>``.
Helper = Callable[[Any], dict[str, Any]]


class ToolError(Exception):
    """A tool's error outcome that still has a result for rules (``outcome.result``)."""

    def __init__(self, message: str, *, result: Any = None, type_name: str | None = None) -> None:
        super().__init__(message)
        self.result = result
        self.type_name = type_name or type(self).__name__


class UnknownToolError(LookupError):
    """No tool is registered for a task's kind on this worker."""


async def run_noop(config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any]) -> Any:
    """The ``noop`` tool: returns its inputs, or None when it has none."""
    return args or None


class ToolRegistry:
    """Maps a task ``kind`` to the coroutine that runs it."""

    def __init__(self, tools: Mapping[str, Tool] | None = None) -> None:
        self._tools: dict[str, Tool] = dict(tools or {})
        self._helpers: dict[str, Helper] = {}

    @classmethod
    def default(cls) -> ToolRegistry:
        """The tools this worker ships: python, noop, http, postgres, duckdb, nats, secrets."""
        from .tools import register_builtin

        registry = cls({"python": run_python, "noop": run_noop})
        register_builtin(registry)
        return registry

    def register(self, kind: str, tool: Tool, helper: Helper | None = None) -> None:
        """Add or replace the tool for ``kind`` (and its ``outcome.<kind>`` helper)."""
        self._tools[kind] = tool
        if helper is not None:
            self._helpers[kind] = helper
        else:
            self._helpers.pop(kind, None)

    def helper(self, kind: str) -> Helper | None:
        """The ``outcome.<kind>`` helper of ``kind``, if it has one."""
        return self._helpers.get(kind)

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
