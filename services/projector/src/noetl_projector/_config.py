"""Projector settings, read once from the environment (README lists each variable)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from noetl_common import (
    DEFAULT_EVENTS_MAX_AGE_SECONDS,
    ConfigError,
    ServiceEnv,
    env_float,
    env_hostport,
    env_int,
    env_opt,
    event_shard_filter,
)

ALL_EVENTS = "noetl.events.>"
_ORDINAL = re.compile(r"-(\d+)$")


@dataclass(frozen=True, slots=True)
class ProjectorSettings:
    """Which events this replica consumes and how it batches, retries and parks them."""

    shard: int = 0
    shard_count: int = 1
    batch_size: int = 1000
    fetch_timeout_seconds: float = 1.0
    #: a fetch that brought less than a batch waits this long for more before projecting
    linger_seconds: float = 0.02
    ack_wait_seconds: float = 30.0
    max_deliver: int = 100
    nak_delay_seconds: float = 1.0
    nak_max_delay_seconds: float = 60.0
    max_backoff_seconds: float = 30.0
    events_max_age_seconds: float = DEFAULT_EVENTS_MAX_AGE_SECONDS
    shutdown_grace_seconds: float = 20.0

    @property
    def consumer_name(self) -> str:
        return f"noetl_projector_{self.shard}"

    @property
    def filter_subject(self) -> str:
        return event_shard_filter(self.shard) if self.shard_count > 1 else ALL_EVENTS


def resolve_shard(shard_count: int, env: Mapping[str, str] | None = None) -> int:
    """PROJECTOR_SHARD, else the StatefulSet ordinal (trailing ``-N`` of HOSTNAME).

    With one shard every replica is shard 0 (they share one durable consumer).
    """
    if shard_count == 1:
        return 0
    explicit = env_opt("PROJECTOR_SHARD", env=env)
    if explicit is not None:
        shard = env_int("PROJECTOR_SHARD", 0, minimum=0, env=env)
        source = "PROJECTOR_SHARD"
    else:
        match = _ORDINAL.search(env_opt("HOSTNAME", env=env) or "")
        if match is None:
            raise ConfigError(
                "PROJECTOR_SHARD is required when NOETL_EVENT_SHARD_COUNT > 1 "
                "and HOSTNAME has no StatefulSet ordinal (-N)"
            )
        shard = int(match.group(1))
        source = "HOSTNAME ordinal"
    if shard >= shard_count:
        raise ConfigError(f"{source} {shard} must be < NOETL_EVENT_SHARD_COUNT ({shard_count})")
    return shard


@dataclass(frozen=True, slots=True)
class ProjectorConfig(ServiceEnv):
    """Everything ``noetl-projector`` reads from its environment."""

    metrics_host: str
    metrics_port: int
    settings: ProjectorSettings

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProjectorConfig:
        """Parse the environment; a bad value raises ``ConfigError`` naming the variable."""
        host, port = env_hostport("PROJECTOR_METRICS_BIND", "0.0.0.0:9092", env=env)
        shard_count = env_int("NOETL_EVENT_SHARD_COUNT", 1, minimum=1, maximum=1024, env=env)
        return cls(
            **ServiceEnv.read(env),
            metrics_host=host,
            metrics_port=port,
            settings=ProjectorSettings(
                shard=resolve_shard(shard_count, env),
                shard_count=shard_count,
                batch_size=env_int("PROJECTOR_BATCH_SIZE", 1000, minimum=1, maximum=10_000, env=env),
                fetch_timeout_seconds=env_float(
                    "PROJECTOR_FETCH_TIMEOUT_SECONDS", 1.0, minimum=0.05, env=env
                ),
                linger_seconds=min(1.0, env_float("PROJECTOR_LINGER_SECONDS", 0.02, minimum=0.0, env=env)),
                ack_wait_seconds=env_float("PROJECTOR_ACK_WAIT_SECONDS", 30.0, minimum=1.0, env=env),
                max_deliver=env_int("PROJECTOR_MAX_DELIVER", 100, minimum=2, env=env),
                nak_delay_seconds=env_float("PROJECTOR_NAK_DELAY_SECONDS", 1.0, minimum=0.0, env=env),
                nak_max_delay_seconds=env_float(
                    "PROJECTOR_NAK_MAX_DELAY_SECONDS", 60.0, minimum=0.0, env=env
                ),
                max_backoff_seconds=env_float("PROJECTOR_MAX_BACKOFF_SECONDS", 30.0, minimum=0.1, env=env),
                events_max_age_seconds=env_float(
                    "NOETL_EVENTS_MAX_AGE_SECONDS", DEFAULT_EVENTS_MAX_AGE_SECONDS, minimum=1.0, env=env
                ),
                shutdown_grace_seconds=env_float(
                    "PROJECTOR_SHUTDOWN_GRACE_SECONDS", 20.0, minimum=0.0, env=env
                ),
            ),
        )
