"""The error of a failed task: what a worker reports in ``command.failed.context.error``."""

from __future__ import annotations

from typing import Any

import msgspec


class TaskError(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """Why a step's command failed; on the wire ``{message, type?, task?, kind?, retryable?, code?}``
    (docs/contracts.md).

    ``kind`` travels as ``type``: the failure's class (``TimeoutError``, ``RetriesExhausted``,
    ``DeadLettered``, ...); ``task`` names the pipeline task that failed. ``message`` is None
    only when the report carried none. ``category`` travels as ``kind``, with ``retryable``
    and ``code``: upstream NoETL's error shape (``tool_error``, ``config``, ...; ``HTTP_503``),
    which routing conditions read as ``error.kind`` / ``error.retryable``.
    """

    message: str | None = None
    kind: str | None = msgspec.field(default=None, name="type")
    task: str | None = None
    category: str | None = msgspec.field(default=None, name="kind")
    retryable: bool | None = None
    code: str | None = None

    @classmethod
    def parse(cls, raw: object) -> TaskError:
        """Read an error as recorded, never refusing one, so events of every age replay.

        A value that is no mapping is the message; an empty ``type`` or ``task`` counts as
        absent; other values are kept as their text.
        """
        if not isinstance(raw, dict):
            return cls(message=str(raw))
        kind, task = raw.get("type"), raw.get("task")
        category, retryable, code = raw.get("kind"), raw.get("retryable"), raw.get("code")
        return cls(
            message=str(raw["message"]) if "message" in raw else None,
            kind=str(kind) if kind else None,
            task=str(task) if task else None,
            category=str(category) if category else None,
            retryable=retryable if isinstance(retryable, bool) else None,
            code=str(code) if code not in (None, "") else None,
        )

    def scope(self) -> dict[str, Any]:
        """The error as routing templates read it: the wire form, with ``kind`` (``unknown``),
        ``retryable`` (false) and ``code`` (none) always present, as upstream's are."""
        return {"kind": "unknown", "retryable": False, "code": None, **self.to_json()}

    def to_json(self) -> dict[str, Any]:
        """The wire form, ``{message, type?, task?, kind?, retryable?, code?}``."""
        wire: dict[str, Any] = msgspec.to_builtins(self)
        return wire
