"""Worker configuration: defaults, overrides, and one clear error naming the variable."""

from __future__ import annotations

import socket

import pytest
from noetl_common import ConfigError, ControlPlaneClient
from noetl_common.templating import TemplateLimits
from noetl_system_worker import ClientPool, ControlPlane, WorkerConfig

TOKEN = "worker-token-for-the-config-tests-0123456789"
REQUIRED = {"NOETL_SERVER_URL": "http://control-api:8082", "NOETL_API_TOKEN": TOKEN}


def test_defaults() -> None:
    config = WorkerConfig.from_env(REQUIRED)
    assert config.pool == "shared"
    assert config.worker_id.startswith(socket.gethostname() + "-")
    assert config.max_concurrent == 8
    assert config.heartbeat_interval == 5.0
    assert config.shutdown_grace_seconds == 30.0
    assert (config.metrics_host, config.metrics_port) == ("0.0.0.0", 9090)
    assert config.nats_url == "nats://127.0.0.1:4222"
    assert config.stream == "NOETL_COMMANDS"
    assert config.consumer == "noetl_worker_pool_shared"
    assert config.filter_subject == "noetl.commands.shared.>"
    assert config.log_level == "INFO"
    assert config.keychain_env_vars == ()
    assert config.fetch_timeout_seconds <= 2.0
    assert config.lag_poll_interval == 10.0
    assert config.api_token == TOKEN and config.allowed_server_urls == ()


def test_pool_selects_consumer_and_filter() -> None:
    config = WorkerConfig.from_env({**REQUIRED, "WORKER_POOL_NAME": "system"})
    assert (config.consumer, config.filter_subject) == ("noetl_worker_pool_system", "noetl.commands.system.>")


def test_overrides() -> None:
    env = {
        **REQUIRED,
        "WORKER_ID": "w1",
        "WORKER_MAX_CONCURRENT": "3",
        "WORKER_HEARTBEAT_INTERVAL": "2.5",
        "WORKER_METRICS_BIND": "127.0.0.1:9191",
        "NATS_URL": "nats://a:4222,nats://b:4222",
        "NATS_USER": "u",
        "NATS_PASSWORD": "p",
        "NATS_CONSUMER": "custom",
        "NATS_FILTER_SUBJECT": "noetl.commands.shared.42",
        "NOETL_SNOWFLAKE_NODE_ID": "12",
        "NOETL_LOG_LEVEL": "debug",
        "NOETL_KEYCHAIN_ENV_VARS": "API_TOKEN, DB_PASSWORD",
        "WORKER_SHUTDOWN_GRACE_SECONDS": "0",
        "WORKER_NATS_LAG_POLL_INTERVAL": "3",
        "WORKER_ALLOWED_SERVER_URLS": "http://a:8082/, https://b",
    }
    config = WorkerConfig.from_env(env)
    assert config.worker_id == "w1" and config.max_concurrent == 3 and config.heartbeat_interval == 2.5
    assert (config.metrics_host, config.metrics_port) == ("127.0.0.1", 9191)
    assert (config.nats_user, config.nats_password) == ("u", "p")
    assert (config.consumer, config.filter_subject) == ("custom", "noetl.commands.shared.42")
    assert config.snowflake.node_id == 12
    assert config.log_level == "DEBUG"
    assert config.keychain_env_vars == ("API_TOKEN", "DB_PASSWORD")
    assert config.shutdown_grace_seconds == 0
    assert config.lag_poll_interval == 3
    assert config.allowed_server_urls == ("http://a:8082", "https://b")


def test_node_id_falls_back_to_worker_id_hash() -> None:
    a = WorkerConfig.from_env({**REQUIRED, "WORKER_ID": "alpha"}).snowflake.node_id
    b = WorkerConfig.from_env({**REQUIRED, "WORKER_ID": "alpha"}).snowflake.node_id
    assert a == b and 0 <= a < 1024


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({}, "NOETL_SERVER_URL"),
        ({"NOETL_SERVER_URL": "control-api:8082"}, "NOETL_SERVER_URL"),
        ({"WORKER_POOL_NAME": "gpu"}, "WORKER_POOL_NAME"),
        ({"WORKER_MAX_CONCURRENT": "0"}, "WORKER_MAX_CONCURRENT"),
        ({"WORKER_MAX_CONCURRENT": "many"}, "WORKER_MAX_CONCURRENT"),
        ({"WORKER_HEARTBEAT_INTERVAL": "45"}, "WORKER_HEARTBEAT_INTERVAL"),
        ({"WORKER_HEARTBEAT_INTERVAL": "soon"}, "WORKER_HEARTBEAT_INTERVAL"),
        ({"WORKER_METRICS_BIND": "9090"}, "WORKER_METRICS_BIND"),
        ({"WORKER_SHUTDOWN_GRACE_SECONDS": "-1"}, "WORKER_SHUTDOWN_GRACE_SECONDS"),
        ({"NATS_USER": "only-user"}, "NATS_PASSWORD"),
        ({"NOETL_SNOWFLAKE_NODE_ID": "5000"}, "NOETL_SNOWFLAKE_NODE_ID"),
        ({"NOETL_SHARD_ID": "x"}, "NOETL_SHARD_ID"),
        ({"NOETL_LOG_LEVEL": "LOUD"}, "NOETL_LOG_LEVEL"),
        ({"NOETL_KEYCHAIN_ENV_VARS": "OK,not-a-name"}, "NOETL_KEYCHAIN_ENV_VARS"),
        ({"WORKER_ALLOWED_SERVER_URLS": "ftp://x"}, "WORKER_ALLOWED_SERVER_URLS"),
        ({"WORKER_NATS_LAG_POLL_INTERVAL": "0"}, "WORKER_NATS_LAG_POLL_INTERVAL"),
        ({"WORKER_HTTP_DENY_CIDRS": "10.0.0.0/33"}, "WORKER_HTTP_DENY_CIDRS"),
        ({"WORKER_HTTP_ALLOW_CIDRS": "127.0.0.1/8"}, "WORKER_HTTP_ALLOW_CIDRS"),
        ({"WORKER_DUCKDB_ALLOWED_DIRECTORIES": "/data,/"}, "WORKER_DUCKDB_ALLOWED_DIRECTORIES"),
        ({"WORKER_PYTHON_ISOLATION": "docker"}, "WORKER_PYTHON_ISOLATION"),
        ({"WORKER_PYTHON_WARM": "-1"}, "WORKER_PYTHON_WARM"),
        ({"WORKER_PYTHON_CPU_SECONDS": "0"}, "WORKER_PYTHON_CPU_SECONDS"),
        ({"WORKER_PYTHON_MEMORY_BYTES": "1G"}, "WORKER_PYTHON_MEMORY_BYTES"),
        ({"WORKER_PYTHON_MAX_OPEN_FILES": "3"}, "WORKER_PYTHON_MAX_OPEN_FILES"),
        ({"WORKER_PYTHON_OUTPUT_MAX_BYTES": "10"}, "WORKER_PYTHON_OUTPUT_MAX_BYTES"),
        ({"WORKER_PYTHON_TIMEOUT_SECONDS": "0"}, "WORKER_PYTHON_TIMEOUT_SECONDS"),
        ({"WORKER_PYTHON_ENV_ALLOW": "PATH,not-a-name"}, "WORKER_PYTHON_ENV_ALLOW"),
        ({"WORKER_PYTHON_ENV_ALLOW": "PATH,NOETL_API_TOKEN"}, "WORKER_PYTHON_ENV_ALLOW"),
        ({"WORKER_PYTHON_PRELOAD": "json,os;rm"}, "WORKER_PYTHON_PRELOAD"),
        ({"WORKER_SANDBOX_UID": "0"}, "WORKER_SANDBOX_UID"),
        ({"WORKER_SANDBOX_GID": "nobody"}, "WORKER_SANDBOX_GID"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], variable: str) -> None:
    base = {} if "NOETL_SERVER_URL" in env or not env else dict(REQUIRED)
    with pytest.raises(ConfigError) as caught:
        WorkerConfig.from_env({**base, **env})
    message = str(caught.value)
    assert variable in message and "\n" not in message


async def test_client_pool_reuses_one_client_per_allowed_url() -> None:
    pool = ClientPool("http://default:8082/", allowed=("http://elsewhere:8082/",))
    try:
        default = pool.get(None)
        assert default is pool.get("") is pool.get("http://default:8082")
        other = pool.get("http://elsewhere:8082")
        assert other is not default and other.base_url == "http://elsewhere:8082"
        # A URL nobody allowed (a forged notification) gets the configured API instead.
        assert pool.get("http://attacker.example") is default
        assert pool.refused == {"http://attacker.example"}
        # The real client is what the worker's protocol describes.
        api: ControlPlane = default
        assert isinstance(api, ControlPlaneClient)
    finally:
        await pool.aclose()


def test_python_settings_default_to_a_process_sandbox_and_can_be_changed() -> None:
    default = WorkerConfig.from_env(REQUIRED).python
    config = WorkerConfig.from_env(
        {
            **REQUIRED,
            "WORKER_PYTHON_ISOLATION": "thread",
            "WORKER_PYTHON_WARM": "0",
            "WORKER_PYTHON_CPU_SECONDS": "30",
            "WORKER_PYTHON_MEMORY_BYTES": "134217728",
            "WORKER_PYTHON_MAX_OPEN_FILES": "64",
            "WORKER_PYTHON_FILE_MAX_BYTES": "0",
            "WORKER_PYTHON_MAX_PROCESSES": "8",
            "WORKER_PYTHON_OUTPUT_MAX_BYTES": "4096",
            "WORKER_PYTHON_TIMEOUT_SECONDS": "90",
            "WORKER_PYTHON_ENV_ALLOW": "PATH, TZ ,PATH",
            "WORKER_PYTHON_PRELOAD": "json,xml.etree.ElementTree",
            "WORKER_SANDBOX_UID": "70000",
            "WORKER_SANDBOX_GID": "70001",
        }
    ).python

    assert (default.isolation, default.warm, default.timeout_seconds) == ("process", 2, 3600.0)
    assert default.env_allow == ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "PYTHONHASHSEED")
    assert (default.limits.cpu_seconds, default.limits.memory_bytes) == (600, 2 * 1024**3)
    assert (default.limits.uid, default.limits.gid, default.limits.output_max_bytes) == (
        61000,
        61000,
        16 * 1024**2,
    )
    assert "json" in default.limits.preload
    assert (config.isolation, config.warm, config.timeout_seconds) == ("thread", 0, 90.0)
    assert config.env_allow == ("PATH", "TZ")
    limits = config.limits
    assert (limits.cpu_seconds, limits.memory_bytes, limits.max_open_files) == (30, 134217728, 64)
    assert (limits.file_max_bytes, limits.max_processes, limits.output_max_bytes) == (0, 8, 4096)
    assert (limits.uid, limits.gid, limits.preload) == (70000, 70001, ("json", "xml.etree.ElementTree"))


def test_consumer_ack_wait_and_max_deliver() -> None:
    default = WorkerConfig.from_env(REQUIRED)
    assert (default.ack_wait_seconds, default.max_deliver) == (30.0, 10)
    config = WorkerConfig.from_env(
        {**REQUIRED, "WORKER_ACK_WAIT_SECONDS": "12.5", "WORKER_MAX_DELIVER": "20"}
    )
    assert (config.ack_wait_seconds, config.max_deliver) == (12.5, 20)
    for variable, value in (("WORKER_ACK_WAIT_SECONDS", "0"), ("WORKER_MAX_DELIVER", "1")):
        with pytest.raises(ConfigError, match=variable):
            WorkerConfig.from_env({**REQUIRED, variable: value})


@pytest.mark.parametrize(
    "name",
    [
        "NOETL_API_TOKEN",
        "NOETL_INTERNAL_API_TOKEN",
        "NOETL_ADMIN_TOKEN",
        "NOETL_WORKER_TOKEN_SYSTEM",
        "NOETL_CREDENTIALS_KEY",
        "NOETL_DATABASE_URL",
        "NATS_USER",
        "NATS_PASSWORD",
        "NATS_TOKEN",
    ],
)
def test_keychain_env_vars_refuse_the_suites_own_secrets(name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        WorkerConfig.from_env({**REQUIRED, "NOETL_KEYCHAIN_ENV_VARS": f"PARTNER_KEY, {name}"})

    message = str(caught.value)
    assert message.startswith(f"NOETL_KEYCHAIN_ENV_VARS names {name},") and "\n" not in message


def test_http_egress_and_duckdb_settings() -> None:
    default = WorkerConfig.from_env(REQUIRED)
    config = WorkerConfig.from_env(
        {
            **REQUIRED,
            "WORKER_HTTP_DENY_CIDRS": "10.96.0.0/12, fd00:10:96::/112",
            "WORKER_HTTP_ALLOW_CIDRS": "127.0.0.0/8,::1",
            "WORKER_HTTP_ALLOW_HOSTS": "Api.Example.com, *.svc.example",
            "WORKER_DUCKDB_ALLOWED_DIRECTORIES": "/data/in, /data/out/",
        }
    )

    assert default.http_egress.allowed == () and default.duckdb_directories == ()
    assert [str(n) for n, _ in config.http_egress.denied[-2:]] == ["10.96.0.0/12", "fd00:10:96::/112"]
    assert [str(n) for n in config.http_egress.allowed] == ["127.0.0.0/8", "::1/128"]
    assert config.http_egress.allowed_hosts == ("api.example.com", "*.svc.example")
    assert config.duckdb_directories == ("/data/in", "/data/out")


def test_template_limits_come_from_the_environment() -> None:
    assert WorkerConfig.from_env(REQUIRED).template_limits == TemplateLimits()
    config = WorkerConfig.from_env(
        {**REQUIRED, "NOETL_TEMPLATE_MAX_ITERATIONS": "1000", "NOETL_TEMPLATE_MAX_SECONDS": "2"}
    )
    assert config.template_limits == TemplateLimits(max_iterations=1000, max_seconds=2.0)
    with pytest.raises(ConfigError, match="NOETL_TEMPLATE_MAX_OUTPUT_BYTES"):
        WorkerConfig.from_env({**REQUIRED, "NOETL_TEMPLATE_MAX_OUTPUT_BYTES": "lots"})


def test_server_url_may_list_replicas_each_checked() -> None:
    config = WorkerConfig.from_env({**REQUIRED, "NOETL_SERVER_URL": " http://a:8082/, http://b:8082 "})
    assert config.server_url == "http://a:8082,http://b:8082"
    with pytest.raises(ConfigError, match="NOETL_SERVER_URL"):
        WorkerConfig.from_env({**REQUIRED, "NOETL_SERVER_URL": "http://a:8082,b:8082"})
    with pytest.raises(ConfigError, match="NOETL_STREAM_REPLICAS"):
        WorkerConfig.from_env({**REQUIRED, "NOETL_STREAM_REPLICAS": "0"})


async def test_client_pool_sends_a_notification_naming_one_replica_to_the_failover_client() -> None:
    pool = ClientPool("http://a:8082,http://b:8082/")
    try:
        replicas = pool.get(None)
        assert replicas.base_urls == ("http://a:8082", "http://b:8082")
        assert pool.get("http://b:8082/") is replicas
        assert pool.get("http://a:8082, http://b:8082") is replicas
        assert pool.get("http://a:8082,http://attacker.example") is replicas
        assert pool.refused == {"http://a:8082,http://attacker.example"}
    finally:
        await pool.aclose()
