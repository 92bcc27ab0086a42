"""Publisher settings, read once from the environment (README lists each variable)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from noetl_common import (
    DEFAULT_EVENTS_MAX_AGE_SECONDS,
    ServiceEnv,
    env_float,
    env_hostport,
    env_int,
)


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """How the relay loop batches, waits and backs off."""

    batch_size: int = 1000
    wait_ms: int = 1000
    #: published rows are marked together at most this often (0: each batch at once)
    mark_interval_seconds: float = 0.05
    ack_timeout_seconds: float = 10.0
    max_retry_delay_seconds: float = 60.0
    max_backoff_seconds: float = 30.0
    events_max_age_seconds: float = DEFAULT_EVENTS_MAX_AGE_SECONDS
    shutdown_grace_seconds: float = 20.0
    #: a row whose publish failed this many times is dead-lettered instead of retried
    max_attempts: int = 8


@dataclass(frozen=True, slots=True)
class PublisherConfig(ServiceEnv):
    """Everything ``noetl-outbox-publisher`` reads from its environment."""

    metrics_host: str
    metrics_port: int
    relay: RelaySettings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PublisherConfig:
        """Parse the environment; a bad value raises ``ConfigError`` naming the variable."""
        host, port = env_hostport("PUBLISHER_METRICS_BIND", "0.0.0.0:9091", env=env)
        return cls(
            **ServiceEnv.read(env),
            metrics_host=host,
            metrics_port=port,
            relay=RelaySettings(
                batch_size=env_int("OUTBOX_BATCH_SIZE", 1000, minimum=1, maximum=2000, env=env),
                wait_ms=env_int("OUTBOX_WAIT_MS", 1000, minimum=0, maximum=60_000, env=env),
                mark_interval_seconds=env_int(
                    "OUTBOX_MARK_INTERVAL_MS", 50, minimum=0, maximum=5_000, env=env
                )
                / 1000,
                ack_timeout_seconds=env_float("OUTBOX_ACK_TIMEOUT_SECONDS", 10.0, minimum=0.1, env=env),
                max_retry_delay_seconds=env_float(
                    "OUTBOX_MAX_RETRY_DELAY_SECONDS", 60.0, minimum=1.0, env=env
                ),
                max_backoff_seconds=env_float("OUTBOX_MAX_BACKOFF_SECONDS", 30.0, minimum=0.1, env=env),
                events_max_age_seconds=env_float(
                    "NOETL_EVENTS_MAX_AGE_SECONDS", DEFAULT_EVENTS_MAX_AGE_SECONDS, minimum=1.0, env=env
                ),
                shutdown_grace_seconds=env_float(
                    "PUBLISHER_SHUTDOWN_GRACE_SECONDS", 20.0, minimum=0.0, env=env
                ),
                max_attempts=env_int("PUBLISHER_MAX_ATTEMPTS", 8, minimum=1, maximum=1000, env=env),
            ),
        )
