"""Configuration of the control-api, read once from the environment at start."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Literal

import msgspec
from noetl_common import (
    MIN_TOKEN_CHARS,
    ConfigError,
    env_float,
    env_hostport,
    env_int,
    env_opt,
    env_str,
    event_loop_name,
    node_id_from_env,
)
from noetl_common.arrow_limits import ArrowLimits
from noetl_common.templating import TemplateLimits

from ._options import OidcSettings, RetentionPolicy, SweepPolicy, parse_keys

MiB = 1024 * 1024
OIDC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")
KiB = 1024
#: Room left under the NATS max payload for the message's headers (Nats-Msg-Id, and the
#: original subject, ids and error a dead-letter copy carries).
HEADER_MARGIN_BYTES = 8 * KiB


def _epoch(env: Mapping[str, str] | None) -> int | None:
    if env_opt("NOETL_SNOWFLAKE_EPOCH_MS", env=env) is None:
        return None
    return env_int("NOETL_SNOWFLAKE_EPOCH_MS", 0, minimum=0, env=env)


def _seed_dir(env: Mapping[str, str] | None) -> str | None:
    raw = env_opt("NOETL_PLUGIN_SEED_DIR", env=env)
    if raw is not None and not os.path.isdir(raw):
        raise ConfigError(f"NOETL_PLUGIN_SEED_DIR must be a directory, got {raw!r}")
    return raw


def _seconds(
    env: Mapping[str, str] | None, name: str, default: float, low: float, high: float, *, off: bool = False
) -> float:
    """A duration within ``low..high`` seconds (or 0 when ``off`` allows it), finite."""
    value = env_float(name, default, minimum=0.0, env=env)
    if off and value == 0:
        return value
    if not math.isfinite(value) or not low <= value <= high:
        zero = "0 (off) or " if off else ""
        raise ConfigError(f"{name} must be {zero}{low:g}..{high:g} seconds, got {value:g}")
    return value


def _unknown_keys(env: Mapping[str, str] | None) -> Literal["error", "warn"]:
    value = env_str("NOETL_DSL_UNKNOWN_KEYS", "error", env=env).strip().lower()
    if value == "error":
        return "error"
    if value == "warn":
        return "warn"
    raise ConfigError(f"NOETL_DSL_UNKNOWN_KEYS must be error or warn, got {value!r}")


def _sweep(env: Mapping[str, str] | None) -> SweepPolicy:
    return SweepPolicy(
        interval_seconds=_seconds(env, "NOETL_SWEEP_INTERVAL_SECONDS", 10.0, 0.5, 3600.0, off=True),
        republish_seconds=_seconds(env, "NOETL_PENDING_REPUBLISH_SECONDS", 60.0, 1.0, 86_400.0),
        step_timeout_seconds=_seconds(env, "NOETL_STEP_TIMEOUT_SECONDS", 3600.0, 1.0, 30 * 86_400.0),
        pool_absent_seconds=_seconds(env, "NOETL_POOL_ABSENT_SECONDS", 300.0, 5.0, 7 * 86_400.0, off=True),
        retention_interval_seconds=_seconds(
            env, "NOETL_RETENTION_INTERVAL_SECONDS", 3600.0, 10.0, 7 * 86_400.0, off=True
        ),
    )


#: Tokens the control-api takes from its environment (the Secret), with the principal each is.
CONFIGURED_TOKENS: tuple[tuple[str, str, str, str | None], ...] = (
    ("NOETL_ADMIN_TOKEN", "bootstrap-admin", "admin", None),
    ("NOETL_PUBLISHER_TOKEN", "service:outbox-publisher", "publisher", None),
    ("NOETL_PROJECTOR_TOKEN", "service:projector", "projector", None),
    ("NOETL_WORKER_TOKEN_SHARED", "service:worker-shared", "worker", "shared"),
    ("NOETL_WORKER_TOKEN_PYTHON", "service:worker-python", "worker", "python"),
    ("NOETL_WORKER_TOKEN_SYSTEM", "service:worker-system", "worker", "system"),
)


def _configured_tokens(env: Mapping[str, str] | None) -> dict[str, str]:
    """``{variable: token}`` of the configured tokens that are set; each distinct and long enough."""
    if env_opt("NOETL_INTERNAL_API_TOKEN", env=env):
        raise ConfigError(
            "NOETL_INTERNAL_API_TOKEN is no longer read: set NOETL_ADMIN_TOKEN, NOETL_PUBLISHER_TOKEN,"
            " NOETL_PROJECTOR_TOKEN and NOETL_WORKER_TOKEN_<POOL> instead (docs/security.md) and unset it"
        )
    found: dict[str, str] = {}
    for variable, *_ in CONFIGURED_TOKENS:
        value = env_opt(variable, env=env)
        if value is None:
            continue
        if len(value) < MIN_TOKEN_CHARS:
            raise ConfigError(f"{variable} must be at least {MIN_TOKEN_CHARS} characters")
        for other, taken in found.items():
            if taken == value:
                raise ConfigError(f"{variable} has the same value as {other}: every role needs its own token")
        found[variable] = value
    return found


def _oidc(env: Mapping[str, str] | None) -> OidcSettings | None:
    issuer = env_opt("NOETL_OIDC_ISSUER", env=env)
    audience = env_opt("NOETL_OIDC_AUDIENCE", env=env)
    if issuer is None and audience is None:
        return None
    if issuer is None or audience is None:
        raise ConfigError("NOETL_OIDC_ISSUER and NOETL_OIDC_AUDIENCE must be set together")
    algorithms = tuple(
        a.strip() for a in env_str("NOETL_OIDC_ALGORITHMS", "RS256,ES256", env=env).split(",") if a.strip()
    )
    unsupported = [a for a in algorithms if a not in OIDC_ALGORITHMS]
    if not algorithms or unsupported:
        raise ConfigError(f"NOETL_OIDC_ALGORITHMS must list some of {', '.join(OIDC_ALGORITHMS)}")
    return OidcSettings(
        issuer=issuer,
        audience=audience,
        jwks_url=env_opt("NOETL_OIDC_JWKS_URL", env=env),
        role_claim=env_str("NOETL_OIDC_ROLE_CLAIM", "noetl_role", env=env),
        algorithms=algorithms,
    )


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    """Every setting the control-api reads; see the package README for the why of each default."""

    database_url: str
    #: configured tokens: ``{variable: token}`` for the set ones of :data:`CONFIGURED_TOKENS`
    tokens: dict[str, str] = msgspec.field(default_factory=dict)
    auth_cache_seconds: float = 5.0
    oidc: OidcSettings | None = None
    retention: RetentionPolicy = msgspec.field(default_factory=RetentionPolicy)
    sweep: SweepPolicy = msgspec.field(default_factory=SweepPolicy)
    sse_max_streams: int = 1000
    sse_max_streams_per_principal: int = 20
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
    event_loop: str = "uvloop"  # uvicorn's loop for the app: uvloop or asyncio
    #: open connections (or requests in flight) at which a request gets 503 at once
    max_connections: int = 4096
    #: after SIGTERM, how long requests still running (event streams) may take before they are cancelled
    shutdown_grace_seconds: int = 10
    execute_payload_max_bytes: int = 256 * KiB
    playbook_max_bytes: int = 512 * KiB
    #: a key no part of the playbook language takes: ``error`` refuses the registration, ``warn``
    #: logs it and registers (for migrating playbooks); NOETL_DSL_UNKNOWN_KEYS
    dsl_unknown_keys: Literal["error", "warn"] = "error"
    nats_max_payload_bytes: int = MiB  # the nats-server default
    page_max_bytes: int = 8 * MiB
    arrow_limits: ArrowLimits = msgspec.field(default_factory=ArrowLimits)

    @property
    def max_event_bytes(self) -> int:
        """The largest outbox payload written: the NATS max payload less the header margin."""
        return self.nats_max_payload_bytes - HEADER_MARGIN_BYTES
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
            parse_keys(credentials_key)  # a malformed key fails at start, naming the variable
        settings = cls(
            database_url=env_str("NOETL_DATABASE_URL", env=env),
            tokens=_configured_tokens(env),
            auth_cache_seconds=env_float("NOETL_AUTH_CACHE_SECONDS", 5.0, minimum=0.0, env=env),
            oidc=_oidc(env),
            retention=RetentionPolicy(
                outbox_seconds=env_float("NOETL_RETENTION_OUTBOX_SECONDS", 86_400.0, minimum=0.0, env=env),
                executions_seconds=env_float("NOETL_RETENTION_EXECUTIONS_SECONDS", 30 * 86_400.0, minimum=0.0, env=env),
                events_seconds=env_float("NOETL_RETENTION_EVENTS_SECONDS", 30 * 86_400.0, minimum=0.0, env=env),
            ),
            sweep=_sweep(env),
            sse_max_streams=env_int("NOETL_SSE_MAX_STREAMS", 1000, minimum=1, maximum=100_000, env=env),
            sse_max_streams_per_principal=env_int(
                "NOETL_SSE_MAX_STREAMS_PER_PRINCIPAL", 20, minimum=1, maximum=100_000, env=env
            ),
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
            max_connections=env_int("NOETL_API_MAX_CONNECTIONS", 4096, minimum=64, maximum=100_000, env=env),
            shutdown_grace_seconds=env_int(
                "NOETL_API_SHUTDOWN_GRACE_SECONDS", 10, minimum=1, maximum=600, env=env
            ),
            execute_payload_max_bytes=env_int(
                "NOETL_EXECUTE_PAYLOAD_MAX_BYTES", 256 * KiB, minimum=1024, env=env
            ),
            playbook_max_bytes=env_int("NOETL_PLAYBOOK_MAX_BYTES", 512 * KiB, minimum=1024, env=env),
            dsl_unknown_keys=_unknown_keys(env),
            nats_max_payload_bytes=env_int(
                "NOETL_NATS_MAX_PAYLOAD_BYTES", MiB, minimum=64 * KiB, maximum=64 * MiB, env=env
            ),
            page_max_bytes=env_int("NOETL_PAGE_MAX_BYTES", 8 * MiB, minimum=64 * KiB, env=env),
            arrow_limits=ArrowLimits.from_env(env),
            template_limits=TemplateLimits.from_env(env),
        )
        settings.check_sizes()
        return settings

    def check_sizes(self) -> None:
        """Every size that ends up inside one event must fit under the NATS max payload."""
        for name, value in (
            ("NOETL_EXECUTE_PAYLOAD_MAX_BYTES", self.execute_payload_max_bytes),
            ("NOETL_EVENT_RESULT_CONTEXT_MAX_BYTES", self.event_result_context_max_bytes),
        ):
            if value >= self.max_event_bytes:
                raise ConfigError(
                    f"{name}={value} must stay below the largest event, NOETL_NATS_MAX_PAYLOAD_BYTES="
                    f"{self.nats_max_payload_bytes} less {HEADER_MARGIN_BYTES} bytes of headers"
                )
