"""The retention policy: the shortest ages a purge may delete at (``NOETL_RETENTION_*``).

A sweep may keep things longer than the policy, never shorter: neither an admin's request nor
a system playbook's payload can widen what a purge deletes. ``system/scheduled_cleanup``
applies exactly the policy (``{"policy": true}``).
"""

from __future__ import annotations

import msgspec

_FIELDS = {
    "outbox_published_older_than_seconds": ("outbox_seconds", "NOETL_RETENTION_OUTBOX_SECONDS"),
    "executions_older_than_seconds": ("executions_seconds", "NOETL_RETENTION_EXECUTIONS_SECONDS"),
    "events_older_than_seconds": ("events_seconds", "NOETL_RETENTION_EVENTS_SECONDS"),
}


class RetentionPolicy(msgspec.Struct, kw_only=True, frozen=True):
    """Seconds after which published outbox rows, terminal executions and their events may go."""

    outbox_seconds: float = 86_400.0
    executions_seconds: float = 30 * 86_400.0
    events_seconds: float = 30 * 86_400.0

    def floor(self, request_field: str) -> float:
        """The policy's age for a field of the purge request."""
        value: float = getattr(self, _FIELDS[request_field][0])
        return value

    @staticmethod
    def variable(request_field: str) -> str:
        """The setting that holds the policy for a field of the purge request."""
        return _FIELDS[request_field][1]
