"""The error of a failed task: what a worker reports in ``command.failed.context.error``."""

from __future__ import annotations

from typing import Any

import msgspec


class TaskError(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Why a step's command failed; on the wire ``{message, type?, task?}`` (docs/contracts.md).

    ``kind`` travels as ``type``: the failure's class (``TimeoutError``, ``RetriesExhausted``,
    ``DeadLettered``, ...); ``task`` names the pipeline task that failed. ``message`` is None
    only when the report carried none.
    """

    message: str | None = None
    kind: str | None = msgspec.field(default=None, name="type")
    task: str | None = None

    @classmethod
    def parse(cls, raw: object) -> TaskError:
        """Read an error as recorded, never refusing one, so events of every age replay.

        A value that is no mapping is the message; an empty ``type`` or ``task`` counts as
        absent; other values are kept as their text.
        """
        if not isinstance(raw, dict):
            return cls(message=str(raw))
        kind, task = raw.get("type"), raw.get("task")
        return cls(
            message=str(raw["message"]) if "message" in raw else None,
            kind=str(kind) if kind else None,
            task=str(task) if task else None,
        )

    def to_json(self) -> dict[str, Any]:
        """The wire form, ``{message, type?, task?}``."""
        wire: dict[str, Any] = msgspec.to_builtins(self)
        return wire
