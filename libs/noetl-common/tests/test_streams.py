"""Stream and consumer definitions against a real nats-server."""

import nats
import nats.js.errors
import pytest
from noetl_common import (
    COMMANDS_STREAM,
    EVENTS_STREAM,
    ConfigError,
    ServiceEnv,
    ensure_consumer,
    ensure_streams,
    pool_consumer_config,
    stream_replicas,
)
from noetl_common._streams import commands_stream_config, dlq_stream_config, events_stream_config


async def test_ensure_streams_is_idempotent_and_routes_pools(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await ensure_streams(js)
        await ensure_streams(js)  # a second service starting must not fail
        for pool in ("shared", "system"):
            await ensure_consumer(js, COMMANDS_STREAM, pool_consumer_config(pool))
            await ensure_consumer(js, COMMANDS_STREAM, pool_consumer_config(pool))
        await js.publish("noetl.commands.system.42", b"{}")
        sub = await js.pull_subscribe_bind("noetl_worker_pool_system", stream=COMMANDS_STREAM)
        msgs = await sub.fetch(1, timeout=2)
        assert msgs[0].subject == "noetl.commands.system.42"
        shared = await js.consumer_info(COMMANDS_STREAM, "noetl_worker_pool_shared")
        assert shared.num_pending == 0
        ack = await js.publish("noetl.events.default.default.1.0", b"{}", headers={"Nats-Msg-Id": "7"})
        dup = await js.publish("noetl.events.default.default.1.0", b"{}", headers={"Nats-Msg-Id": "7"})
        assert not ack.duplicate and dup.duplicate
        info = await js.stream_info(EVENTS_STREAM)
        assert info.state.messages == 1
    finally:
        await nc.close()


def test_stream_replicas_come_from_one_setting_and_default_to_one() -> None:
    assert stream_replicas({}) == 1
    assert stream_replicas({"NOETL_STREAM_REPLICAS": "3"}) == 3
    for bad in ("0", "6", "three"):
        with pytest.raises(ConfigError, match="NOETL_STREAM_REPLICAS"):
            stream_replicas({"NOETL_STREAM_REPLICAS": bad})
    # every service that ensures the streams checks it at start
    with pytest.raises(ConfigError, match="NOETL_STREAM_REPLICAS"):
        ServiceEnv.read({"NOETL_API_TOKEN": "t" * 40, "NOETL_STREAM_REPLICAS": "0"})
    assert {c.num_replicas for c in (commands_stream_config(3), events_stream_config(replicas=3), dlq_stream_config(3))} == {3}


async def test_ensure_streams_reads_the_replicas_from_the_environment(
    nats_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # one server cannot hold three replicas: the setting reaches the server, which refuses it
    monkeypatch.setenv("NOETL_STREAM_REPLICAS", "3")
    nc = await nats.connect(nats_url)
    try:
        with pytest.raises(nats.js.errors.APIError, match="replicas"):
            await ensure_streams(nc.jetstream())
        await ensure_streams(nc.jetstream(), replicas=1)
        info = await nc.jetstream().stream_info(EVENTS_STREAM)
        assert info.config.num_replicas == 1
    finally:
        await nc.close()
