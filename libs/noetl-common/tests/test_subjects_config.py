"""Pool routing, subjects and env parsing."""

import pytest
from noetl_common import (
    ConfigError,
    command_subject,
    consumer_name,
    env_bool,
    env_hostport,
    env_int,
    env_str,
    event_subject,
    outbox_delay_seconds,
    pool_for,
)


def test_pool_routing() -> None:
    assert pool_for(["python"], "examples/hello") == "shared"
    assert pool_for(["agent"], "examples/a") == "python"
    assert pool_for(["system_cleanup"], "x/y") == "system"
    assert pool_for(["python"], "system/cleanup") == "system"


def test_subjects() -> None:
    assert command_subject("system", 42) == "noetl.commands.system.42"
    assert event_subject(43, 4) == "noetl.events.default.default.43.3"
    assert consumer_name("shared") == "noetl_worker_pool_shared"
    with pytest.raises(ValueError, match="unknown pool"):
        command_subject("gpu", 1)


def test_outbox_backoff_formula() -> None:
    assert [outbox_delay_seconds(a, 60) for a in (0, 1, 2, 3, 7, 20)] == [1, 1, 2, 4, 60, 60]
    assert outbox_delay_seconds(20, 1000) == 256


def test_env_errors_name_the_variable() -> None:
    env = {"A": "x", "B": "7", "C": "maybe", "D": "nohost"}
    assert env_str("A", env=env) == "x" and env_int("B", 1, env=env) == 7
    with pytest.raises(ConfigError, match=r"^Z is required"):
        env_str("Z", env=env)
    with pytest.raises(ConfigError, match=r"^A must be an integer"):
        env_int("A", 1, env=env)
    with pytest.raises(ConfigError, match=r"^B must be <= 5"):
        env_int("B", 1, maximum=5, env=env)
    with pytest.raises(ConfigError, match=r"^C must be a boolean"):
        env_bool("C", True, env=env)
    with pytest.raises(ConfigError, match=r"^D must be HOST:PORT"):
        env_hostport("D", "0.0.0.0:1", env=env)
    assert env_hostport("E", "127.0.0.1:9090", env=env) == ("127.0.0.1", 9090)
