"""Worker configuration: defaults, overrides, and one clear error naming the variable."""

from __future__ import annotations

import socket

import pytest
from noetl_common import ConfigError, ControlPlaneClient
from noetl_common.templating import TemplateLimits
from noetl_system_worker import ClientPool, ControlPlane, WorkerConfig

REQUIRED = {"NOETL_SERVER_URL": "http://control-api:8082"}


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
    assert config.internal_token is None and config.allowed_server_urls == ()


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
        "NOETL_INTERNAL_API_TOKEN": "t0k",
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
    assert config.lag_poll_interval == 3 and config.internal_token == "t0k"
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


def test_consumer_ack_wait_and_max_deliver() -> None:
    default = WorkerConfig.from_env(REQUIRED)
    assert (default.ack_wait_seconds, default.max_deliver) == (30.0, 10)
    config = WorkerConfig.from_env({**REQUIRED, "WORKER_ACK_WAIT_SECONDS": "12.5", "WORKER_MAX_DELIVER": "20"})
    assert (config.ack_wait_seconds, config.max_deliver) == (12.5, 20)
    for variable, value in (("WORKER_ACK_WAIT_SECONDS", "0"), ("WORKER_MAX_DELIVER", "1")):
        with pytest.raises(ConfigError, match=variable):
            WorkerConfig.from_env({**REQUIRED, variable: value})


def test_template_limits_come_from_the_environment() -> None:
    assert WorkerConfig.from_env(REQUIRED).template_limits == TemplateLimits()
    config = WorkerConfig.from_env(
        {**REQUIRED, "NOETL_TEMPLATE_MAX_ITERATIONS": "1000", "NOETL_TEMPLATE_MAX_SECONDS": "2"}
    )
    assert config.template_limits == TemplateLimits(max_iterations=1000, max_seconds=2.0)
    with pytest.raises(ConfigError, match="NOETL_TEMPLATE_MAX_OUTPUT_BYTES"):
        WorkerConfig.from_env({**REQUIRED, "NOETL_TEMPLATE_MAX_OUTPUT_BYTES": "lots"})
