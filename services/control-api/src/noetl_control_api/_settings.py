"""Configuration of the control-api, read once from the environment at start."""

from __future__ import annotations

import os
from collections.abc import Mapping

import msgspec
from noetl_common import (
    ConfigError,
    env_float,
    env_hostport,
    env_int,
    env_opt,
    env_str,
    event_loop_name,
    node_id_from_env,
)
from noetl_common.templating import TemplateLimits

MiB = 1024 * 1024


def _epoch(env: Mapping[str, str] | None) -> int | None:
    if env_opt("NOETL_SNOWFLAKE_EPOCH_MS", env=env) is None:
        return None
    return env_int("NOETL_SNOWFLAKE_EPOCH_MS", 0, minimum=0, env=env)


def _seed_dir(env: Mapping[str, str] | None) -> str | None:
    raw = env_opt("NOETL_PLUGIN_SEED_DIR", env=env)
    if raw is not None and not os.path.isdir(raw):
        raise ConfigError(f"NOETL_PLUGIN_SEED_DIR must be a directory, got {raw!r}")
    return raw


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Every setting the control-api reads; see the package README for the why of each default."""

    database_url: str
    internal_api_token: str | None = None
    bind_host: str = "0.0.0.0"
    bind_port: int = 8082
    server_url: str = "http://localhost:8082"
    command_lease_seconds: float = 30.0
    outbox_lease_seconds: float = 60.0
    event_shard_count: int = 1
    event_result_context_max_bytes: int = 100 * 1024
    db_pool_size: int = 10
    request_max_body_bytes: int = 10 * MiB
    log_level: str = "INFO"
    snowflake_node_id: int = 0
    # True when neither NOETL_SNOWFLAKE_NODE_ID nor NOETL_SHARD_ID is set: the node id is then
    # leased from noetl.node_lease at start (the hash of the hostname is only the fallback)
    snowflake_node_lease: bool = False
    node_lease_seconds: float = 300.0
    snowflake_epoch_ms: int | None = None  # None: the suite's epoch, 2024-01-01Z
    credentials_key: str | None = None  # Fernet key(s); None disables credentials/keychain (503)
    plugin_seed_dir: str | None = None  # built-in WASM plug-ins published at start
    event_loop: str = "uvloop"  # granian's loop for the app: uvloop or asyncio
    # the budget of one template field the orchestrator renders (NOETL_TEMPLATE_*)
    template_limits: TemplateLimits = msgspec.field(default_factory=TemplateLimits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read and validate the environment; raises ConfigError naming the bad variable."""
        host, port = env_hostport("NOETL_API_BIND", "0.0.0.0:8082", env=env)
        log_level = env_str("NOETL_LOG_LEVEL", "INFO", env=env).upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(
                f"NOETL_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {log_level!r}"
            )
        try:
            node_id = node_id_from_env(env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        credentials_key = env_opt("NOETL_CREDENTIALS_KEY", env=env)
        if credentials_key:
            from .application._secrets import parse_keys

            parse_keys(credentials_key)  # a malformed key fails at start, naming the variable
        return cls(
            database_url=env_str("NOETL_DATABASE_URL", env=env),
            internal_api_token=env_opt("NOETL_INTERNAL_API_TOKEN", env=env),
            bind_host=host,
            bind_port=port,
            server_url=env_str("NOETL_SERVER_URL", f"http://localhost:{port}", env=env).rstrip("/"),
            command_lease_seconds=env_float("NOETL_COMMAND_CLAIM_LEASE_SECONDS", 30.0, minimum=1.0, env=env),
            outbox_lease_seconds=env_float("NOETL_OUTBOX_CLAIM_LEASE_SECONDS", 60.0, minimum=1.0, env=env),
            event_shard_count=env_int("NOETL_EVENT_SHARD_COUNT", 1, minimum=1, maximum=1024, env=env),
            event_result_context_max_bytes=env_int(
                "NOETL_EVENT_RESULT_CONTEXT_MAX_BYTES", 100 * 1024, minimum=1024, env=env
            ),
            db_pool_size=env_int("NOETL_DB_POOL_SIZE", 10, minimum=2, maximum=500, env=env),
            request_max_body_bytes=env_int("NOETL_REQUEST_MAX_BODY_BYTES", 10 * MiB, minimum=1024, env=env),
            log_level=log_level,
            snowflake_node_id=node_id,
            snowflake_node_lease=not any(
                (env_opt(key, env=env) or "").strip() for key in ("NOETL_SNOWFLAKE_NODE_ID", "NOETL_SHARD_ID")
            ),
            node_lease_seconds=env_float("NOETL_NODE_LEASE_SECONDS", 300.0, minimum=10.0, env=env),
            snowflake_epoch_ms=_epoch(env),
            credentials_key=credentials_key,
            plugin_seed_dir=_seed_dir(env),
            event_loop=event_loop_name(env),
            template_limits=TemplateLimits.from_env(env),
        )
