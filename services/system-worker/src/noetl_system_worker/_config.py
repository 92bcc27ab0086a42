"""Worker configuration from the environment (architecture.md §9).

Every setting is read once at start; a bad value raises :class:`ConfigError` whose
message names the variable, which ``run_service`` prints as one line before exiting 2.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

from noetl_common import (
    COMMANDS_STREAM,
    POOL_FILTER_MAP,
    POOLS,
    ConfigError,
    Snowflake,
    consumer_name,
    env_api_token,
    env_bool,
    env_float,
    env_hostport,
    env_int,
    env_opt,
    env_str,
    stream_replicas,
)
from noetl_common.arrow_limits import ArrowLimits
from noetl_common.templating import TemplateLimits

from ._egress import EgressPolicy, IPNetwork, parse_hosts, parse_networks
from ._python_config import PythonSettings
from ._runtime import SUITE_SECRET_VARIABLES, is_suite_secret

#: JetStream redelivers an un-acked message after this long; heartbeats must be shorter.
ACK_WAIT_SECONDS = 30.0


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _url(name: str, value: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in schemes or not parsed.netloc:
        raise ConfigError(f"{name} must be a {'/'.join(schemes)} URL, got {value!r}")
    return value


def _server_urls(env: Mapping[str, str]) -> str:
    """``NOETL_SERVER_URL``: one control-api URL or a comma-separated list of its replicas (the
    client fails over between them), each checked; returned as one normalised list."""
    raw = env_str("NOETL_SERVER_URL", env=env)
    urls = [
        _url("NOETL_SERVER_URL", u.strip(), ("http", "https")).rstrip("/")
        for u in raw.split(",")
        if u.strip()
    ]
    if not urls:
        raise ConfigError(f"NOETL_SERVER_URL must be a http/https URL, got {raw!r}")
    return ",".join(urls)


def _egress(env: Mapping[str, str]) -> EgressPolicy:
    def networks(variable: str) -> tuple[IPNetwork, ...]:
        try:
            return parse_networks(env_opt(variable, env=env) or "")
        except ValueError as exc:
            raise ConfigError(f"{variable}: {exc}") from None

    return EgressPolicy.configured(
        deny=networks("WORKER_HTTP_DENY_CIDRS"),
        allow=networks("WORKER_HTTP_ALLOW_CIDRS"),
        hosts=parse_hosts(env_opt("WORKER_HTTP_ALLOW_HOSTS", env=env) or ""),
    )


def _directories(env: Mapping[str, str]) -> tuple[str, ...]:
    text = env_opt("WORKER_DUCKDB_ALLOWED_DIRECTORIES", env=env) or ""
    folders = tuple(os.path.abspath(part.strip()) for part in text.split(",") if part.strip())
    for folder in folders:
        if folder == os.path.abspath(os.sep):
            # "/" would hand the SQL every file again, /proc/self/environ included
            raise ConfigError("WORKER_DUCKDB_ALLOWED_DIRECTORIES must not hold the root folder")
    return folders


@dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """Everything the worker reads from its environment."""

    worker_id: str
    pool: str
    max_concurrent: int
    heartbeat_interval: float
    shutdown_grace_seconds: float
    metrics_host: str
    metrics_port: int
    server_url: str
    nats_url: str
    nats_user: str | None
    nats_password: str | None
    stream: str
    consumer: str
    filter_subject: str
    log_level: str
    lag_poll_interval: float = 10.0
    #: this worker pool's own credential for the control-api (NOETL_API_TOKEN)
    api_token: str | None = None
    allowed_server_urls: tuple[str, ...] = ()
    keychain_env_vars: tuple[str, ...] = ()
    #: Where the http tool may connect (WORKER_HTTP_DENY_CIDRS, _ALLOW_CIDRS, _ALLOW_HOSTS).
    http_egress: EgressPolicy = field(default_factory=EgressPolicy)
    #: Folders whose files the duckdb tool's SQL may read and write (WORKER_DUCKDB_ALLOWED_DIRECTORIES).
    duckdb_directories: tuple[str, ...] = ()
    #: A step result whose event context would exceed this goes to the result store.
    result_inline_max_bytes: int = 100 * 1024
    ack_wait_seconds: float = ACK_WAIT_SECONDS
    max_deliver: int = 10
    #: Longest blocking pull; bounds how late a stop request is noticed (architecture.md §5: ≤ 2 s).
    fetch_timeout_seconds: float = 2.0
    #: Ask for the next command of this pool in the reply to a terminal event (eager dispatch).
    eager_dispatch: bool = False
    #: Terminal batches of commands finishing together sent in one POST, at most this many.
    event_batch_max: int = 32
    snowflake: Snowflake = field(default_factory=lambda: Snowflake(0), compare=False, repr=False)
    #: NOETL_SNOWFLAKE_NODE_ID / NOETL_SHARD_ID named the node id: a leased one is not taken
    snowflake_node_explicit: bool = False
    #: NOETL_ARROW_MAX_*: Arrow data (WASM inputs and outputs, tabular results) is checked
    #: against them before it is decoded or turned into rows
    arrow_limits: ArrowLimits = field(default_factory=ArrowLimits)
    #: How python tasks run (WORKER_PYTHON_*): a sandbox process per task, or a thread.
    python: PythonSettings = field(default_factory=PythonSettings)
    #: The budget of each template render of a task (its config, a rule): NOETL_TEMPLATE_*.
    template_limits: TemplateLimits = field(default_factory=TemplateLimits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        """Parse and validate the worker's settings; raise ConfigError naming the variable."""
        env = os.environ if env is None else env
        worker_id = env_str("WORKER_ID", _default_worker_id(), env=env)
        pool = env_str("WORKER_POOL_NAME", "shared", env=env)
        if pool not in POOLS:
            raise ConfigError(f"WORKER_POOL_NAME must be one of {', '.join(POOLS)}, got {pool!r}")
        heartbeat = env_float("WORKER_HEARTBEAT_INTERVAL", 5.0, minimum=0.05, env=env)
        if heartbeat >= ACK_WAIT_SECONDS:
            # A slower heartbeat would let JetStream redeliver a command that is still running.
            raise ConfigError(
                f"WORKER_HEARTBEAT_INTERVAL must be < {ACK_WAIT_SECONDS:g} (the consumer ack wait), got {heartbeat:g}"
            )
        host, port = env_hostport("WORKER_METRICS_BIND", "0.0.0.0:9090", env=env)
        user = env_opt("NATS_USER", env=env)
        password = env_opt("NATS_PASSWORD", env=env)
        if (user is None) != (password is None):
            raise ConfigError("NATS_USER and NATS_PASSWORD must be set together")
        keychain = env_opt("NOETL_KEYCHAIN_ENV_VARS", env=env) or ""
        names = tuple(n.strip() for n in keychain.split(",") if n.strip())
        for name in names:
            if not name.replace("_", "").isalnum():
                raise ConfigError(f"NOETL_KEYCHAIN_ENV_VARS holds an invalid variable name {name!r}")
            if is_suite_secret(name):
                raise ConfigError(
                    f"NOETL_KEYCHAIN_ENV_VARS names {name}, a secret of the suite itself"
                    f" ({', '.join(SUITE_SECRET_VARIABLES)}): a playbook must never read it"
                )
        try:
            snowflake = Snowflake.from_env({**env, "WORKER_ID": worker_id})
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        egress = _egress(env)
        log_level = env_str("NOETL_LOG_LEVEL", "INFO", env=env).upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"NOETL_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}")
        stream_replicas(env)  # ensure_streams reads it when it declares the streams; checked here, at start
        return cls(
            worker_id=worker_id,
            pool=pool,
            max_concurrent=env_int("WORKER_MAX_CONCURRENT", 8, minimum=1, maximum=1024, env=env),
            heartbeat_interval=heartbeat,
            shutdown_grace_seconds=env_float("WORKER_SHUTDOWN_GRACE_SECONDS", 30.0, minimum=0.0, env=env),
            metrics_host=host,
            metrics_port=port,
            server_url=_server_urls(env),
            nats_url=env_str("NATS_URL", "nats://127.0.0.1:4222", env=env),
            nats_user=user,
            nats_password=password,
            stream=env_str("NATS_STREAM", COMMANDS_STREAM, env=env),
            consumer=env_str("NATS_CONSUMER", consumer_name(pool), env=env),
            filter_subject=env_str("NATS_FILTER_SUBJECT", POOL_FILTER_MAP[pool], env=env),
            log_level=log_level,
            keychain_env_vars=names,
            http_egress=egress,
            duckdb_directories=_directories(env),
            result_inline_max_bytes=env_int(
                "NOETL_EVENT_RESULT_CONTEXT_MAX_BYTES", 100 * 1024, minimum=1024, env=env
            ),
            lag_poll_interval=env_float("WORKER_NATS_LAG_POLL_INTERVAL", 10.0, minimum=0.1, env=env),
            api_token=env_api_token(env),
            allowed_server_urls=tuple(
                _url("WORKER_ALLOWED_SERVER_URLS", u.strip(), ("http", "https")).rstrip("/")
                for u in (env_opt("WORKER_ALLOWED_SERVER_URLS", env=env) or "").split(",")
                if u.strip()
            ),
            snowflake=snowflake,
            snowflake_node_explicit=any(
                (env_opt(key, env=env) or "").strip() for key in ("NOETL_SNOWFLAKE_NODE_ID", "NOETL_SHARD_ID")
            ),
            eager_dispatch=env_bool("WORKER_EAGER_DISPATCH", True, env=env),
            event_batch_max=env_int("WORKER_EVENT_BATCH_MAX", 32, minimum=1, maximum=256, env=env),
            ack_wait_seconds=env_float("WORKER_ACK_WAIT_SECONDS", ACK_WAIT_SECONDS, minimum=1.0, env=env),
            max_deliver=env_int("WORKER_MAX_DELIVER", 10, minimum=2, maximum=1000, env=env),
            arrow_limits=ArrowLimits.from_env(env),
            python=PythonSettings.from_env(env),
            template_limits=TemplateLimits.from_env(env),
        )
