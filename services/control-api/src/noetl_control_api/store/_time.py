"""Timestamps from Postgres rendered like ``noetl_common.utc_now_iso``."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(value: datetime | None) -> str | None:
    """RFC 3339 UTC with a ``Z`` suffix; None stays None."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
