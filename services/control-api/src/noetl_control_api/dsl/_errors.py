"""The one error a playbook can fail registration with."""

from __future__ import annotations


class PlaybookError(ValueError):
    """An invalid playbook; ``step`` and ``field`` locate the problem when known."""

    def __init__(self, message: str, *, step: str | None = None, field: str | None = None) -> None:
        self.message = message
        self.step = step
        self.field = field
        where = []
        if step is not None:
            where.append(f"step {step!r}")
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
