"""Shard resolution and consumer settings from the environment."""

from __future__ import annotations

import pytest
from noetl_common import ConfigError
from noetl_projector import ProjectorConfig, consumer_config, resolve_shard

BASE = {"NOETL_API_TOKEN": "test-token-for-the-service-0123456789abcdef"}


def test_one_shard_consumes_every_event_whatever_the_hostname() -> None:
    config = ProjectorConfig.from_env({**BASE, "HOSTNAME": "noetl-projector-3"})
    assert config.settings.shard == 0
    assert config.settings.consumer_name == "noetl_projector_0"
    assert config.settings.filter_subject == "noetl.events.>"
    assert (config.metrics_host, config.metrics_port) == ("0.0.0.0", 9092)


def test_the_statefulset_ordinal_picks_the_shard() -> None:
    config = ProjectorConfig.from_env(
        {**BASE, "NOETL_EVENT_SHARD_COUNT": "4", "HOSTNAME": "noetl-projector-2"}
    )
    assert config.settings.shard == 2
    assert config.settings.filter_subject == "noetl.events.*.*.*.2"
    consumer = consumer_config(config.settings)
    assert consumer.durable_name == "noetl_projector_2"
    assert consumer.max_deliver == 100


def test_projector_shard_overrides_the_hostname() -> None:
    env = {"NOETL_EVENT_SHARD_COUNT": "4", "HOSTNAME": "noetl-projector-2", "PROJECTOR_SHARD": "1"}
    assert resolve_shard(4, env) == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NOETL_EVENT_SHARD_COUNT": "4", "HOSTNAME": "projector"}, "PROJECTOR_SHARD is required"),
        ({"NOETL_EVENT_SHARD_COUNT": "4", "HOSTNAME": "noetl-projector-4"}, "HOSTNAME ordinal 4 must be < "),
        ({"NOETL_EVENT_SHARD_COUNT": "2", "PROJECTOR_SHARD": "x"}, "PROJECTOR_SHARD must be an integer"),
        ({"PROJECTOR_BATCH_SIZE": "0"}, "PROJECTOR_BATCH_SIZE must be >= 1"),
        ({}, "NOETL_API_TOKEN is required"),
        ({"NOETL_API_TOKEN": "short"}, "NOETL_API_TOKEN must be at least 32 characters"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    full = env if not env else {**BASE, **env}
    with pytest.raises(ConfigError, match=message):
        ProjectorConfig.from_env(full)


def test_the_old_shared_token_is_pointed_at_the_new_one() -> None:
    with pytest.raises(ConfigError, match=r"NOETL_API_TOKEN is required.*NOETL_INTERNAL_API_TOKEN is no longer read"):
        ProjectorConfig.from_env({"NOETL_INTERNAL_API_TOKEN": "x" * 40})
