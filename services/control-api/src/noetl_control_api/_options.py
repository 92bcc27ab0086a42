"""Options the settings read from the environment and the use cases are built with.

Neutral ground between ``_settings`` (which builds them) and ``application`` (which takes
them): neither of those two imports the other.

The retention policy (``NOETL_RETENTION_*``) is the shortest ages a purge may delete at: a
sweep may keep things longer, never shorter, so neither an admin's request nor a system
playbook's payload can widen what a purge deletes (``system/scheduled_cleanup`` applies
exactly the policy, ``{"policy": true}``).
"""

from __future__ import annotations

import msgspec
from cryptography.fernet import Fernet, MultiFernet
from noetl_common import ConfigError

#: The variable that holds the Fernet key(s) of credentials and keychain values.
KEY_VARIABLE = "NOETL_CREDENTIALS_KEY"


class OidcSettings(msgspec.Struct, kw_only=True, frozen=True):
    """``NOETL_OIDC_*``: issuer and audience are required to enable OIDC."""

    issuer: str
    audience: str
    jwks_url: str | None = None
    role_claim: str = "noetl_role"
    algorithms: tuple[str, ...] = ("RS256", "ES256")


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


class SweepPolicy(msgspec.Struct, kw_only=True, frozen=True):
    """``NOETL_SWEEP_*`` and the sweeper's bounds (docs/sweeper.md); 0 turns off what says so."""

    #: seconds between two rounds of one replica; 0: this replica does not sweep
    interval_seconds: float = 10.0
    #: a command no worker holds for this long gets its notification again
    republish_seconds: float = 60.0
    #: the bound of a step without a ``timeout`` of its own
    step_timeout_seconds: float = 3600.0
    #: a pool without a worker heartbeat for this long fails its open commands; 0: never
    pool_absent_seconds: float = 300.0
    #: how often the retention policy runs, across replicas; 0: never (a CronJob runs it)
    retention_interval_seconds: float = 3600.0


def parse_keys(raw: str) -> MultiFernet:
    """Fernet keys from a comma list; ConfigError naming the variable when one is invalid."""
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    if not keys:
        raise ConfigError(f"{KEY_VARIABLE} is empty")
    try:
        return MultiFernet([Fernet(k.encode()) for k in keys])
    except (ValueError, TypeError):
        raise ConfigError(
            f"{KEY_VARIABLE} must be one or more comma-separated Fernet keys (32 url-safe base64-encoded"
            " bytes; make one with `python -c 'from cryptography.fernet import Fernet;"
            " print(Fernet.generate_key().decode())'`)"
        ) from None
