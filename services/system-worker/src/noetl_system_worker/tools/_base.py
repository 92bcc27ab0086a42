"""What every tool shares: the call it answers, its errors, and the command it runs for.

A tool raises to report an error; the pipeline turns the exception into the task's error
outcome (``{message, type}``), so a tool never needs to build events itself. A
:class:`ToolError` may carry a ``result`` that rules still see (an http 503 response).
"""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from noetl_common import Event


class Tool(Protocol):
    """A tool: the task's rendered config, its inputs and the render context → its result."""

    def __call__(
        self, config: dict[str, Any], args: dict[str, Any], ctx: Mapping[str, Any], /
    ) -> Awaitable[Any]:
        """Run the task once; raise to make it an error outcome."""
        ...


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


@dataclass(frozen=True)
class CommandScope:
    """The claimed command a tool runs for: where to flush intents and how to mint events."""

    api: Any  # ControlPlaneClient: post_events, get_plugin, put_object, put_result
    execution_id: int
    step: str
    event: Callable[..., Event]  # (event_type, status, context) -> Event with the claim's meta


#: Set by the worker around each claimed command's pipeline.
current_command: contextvars.ContextVar[CommandScope | None] = contextvars.ContextVar(
    "noetl_current_command", default=None
)
