"""Environment parsing with one clear error line per bad variable."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A bad or missing setting; the message names the variable."""


def _raw(name: str, env: Mapping[str, str] | None) -> str | None:
    value = (os.environ if env is None else env).get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str | None = None, *, env: Mapping[str, str] | None = None) -> str:
    value = _raw(name, env)
    if value is None:
        if default is None:
            raise ConfigError(f"{name} is required but not set")
        return default
    return value


def env_opt(name: str, *, env: Mapping[str, str] | None = None) -> str | None:
    return _raw(name, env)


def env_int(
    name: str,
    default: int,
    *,
    minimum: int | None = None,
    maximum: int | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    value = _raw(name, env)
    if value is None:
        return default
    try:
        result = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and result < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {result}")
    if maximum is not None and result > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {result}")
    return result


def env_float(
    name: str, default: float, *, minimum: float | None = None, env: Mapping[str, str] | None = None
) -> float:
    value = _raw(name, env)
    if value is None:
        return default
    try:
        result = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if minimum is not None and result < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {result}")
    return result


def env_bool(name: str, default: bool, *, env: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, env)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be a boolean (true/false), got {value!r}")


def env_hostport(name: str, default: str, *, env: Mapping[str, str] | None = None) -> tuple[str, int]:
    value = env_str(name, default, env=env)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{name} must be HOST:PORT, got {value!r}")
    return host or "0.0.0.0", int(port)


#: JetStream's own limit on the replicas of a stream.
MAX_STREAM_REPLICAS = 5


def stream_replicas(env: Mapping[str, str] | None = None) -> int:
    """``NOETL_STREAM_REPLICAS``: on how many NATS servers each stream is kept (1..5, default 1);
    a bad value raises ``ConfigError`` naming it."""
    return env_int("NOETL_STREAM_REPLICAS", 1, minimum=1, maximum=MAX_STREAM_REPLICAS, env=env)


MIN_TOKEN_CHARS = 32


def env_api_token(env: Mapping[str, str] | None = None) -> str:
    """``NOETL_API_TOKEN``: the service's own credential for the control-api (required).

    The one token every service used to share (``NOETL_INTERNAL_API_TOKEN``) is gone: each
    service gets a token of its own role (docs/security.md), so the message says so.
    """
    token = env_opt("NOETL_API_TOKEN", env=env)
    if token is None:
        hint = (
            " (NOETL_INTERNAL_API_TOKEN is no longer read: each service has a token of its own role,"
            " see docs/security.md)"
            if env_opt("NOETL_INTERNAL_API_TOKEN", env=env)
            else ""
        )
        raise ConfigError(f"NOETL_API_TOKEN is required: this service's token for the control-api{hint}")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(f"NOETL_API_TOKEN must be at least {MIN_TOKEN_CHARS} characters")
    return token


@dataclass(frozen=True, slots=True)
class ServiceEnv:
    """What every relay service reads to reach the control-api and NATS.

    Service configs extend it; ``read`` parses these variables once, in one place.
    """

    server_url: str
    api_token: str
    nats_url: str
    nats_user: str | None
    nats_password: str | None
    log_level: str

    @staticmethod
    def read(env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The base fields as keyword arguments; a bad value raises ``ConfigError`` naming it."""
        stream_replicas(env)  # read again where the streams are ensured; a bad value fails here, at start
        return {
            "server_url": env_str("NOETL_SERVER_URL", "http://127.0.0.1:8082", env=env),
            "api_token": env_api_token(env),
            "nats_url": env_str("NATS_URL", "nats://127.0.0.1:4222", env=env),
            "nats_user": env_opt("NATS_USER", env=env),
            "nats_password": env_opt("NATS_PASSWORD", env=env),
            "log_level": env_str("NOETL_LOG_LEVEL", "INFO", env=env),
        }
