"""Data the orchestrator takes and returns; plain msgspec structs, no I/O."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from noetl_common import CommandSpec, TaskError

ExecutionStatus = Literal["RUNNING", "COMPLETED", "FAILED", "CANCELLED"]


class EventDraft(msgspec.Struct, omit_defaults=True, kw_only=True):
    """An event to record; the store mints its event_id and timestamp."""

    event_type: str
    step: str | None = None
    status: str | None = None
    context: dict[str, Any] | None = None
    meta: dict[str, Any] | None = None


class CommandDraft(msgspec.Struct, kw_only=True):
    """A command to issue; ``meta`` comes back unchanged in the CommandOutcome."""

    step: str
    pool: str
    tool_kind: str
    spec: CommandSpec
    meta: dict[str, Any] = msgspec.field(default_factory=dict)


class CommandOutcome(msgspec.Struct, kw_only=True):
    """A command's terminal result as reported by a worker; ``error`` when it failed."""

    command_id: int
    step: str
    status: Literal["completed", "failed"]
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    result: Any = None
    error: TaskError | None = None
    set: dict[str, Any] | None = None
