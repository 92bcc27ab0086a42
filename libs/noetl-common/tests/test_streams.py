"""Stream and consumer definitions against a real nats-server."""

import asyncio
import dataclasses

import nats
import nats.js.errors
import pytest
import structlog
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import NotFoundError
from noetl_common import (
    COMMANDS_STREAM,
    DLQ_STREAM,
    EVENTS_STREAM,
    ConfigError,
    ServiceEnv,
    StreamConfigConflict,
    declared_streams,
    ensure_consumer,
    ensure_streams,
    pool_consumer_config,
    stream_differences,
    stream_replicas,
)


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
    assert {c.num_replicas for c in declared_streams(replicas=3).values()} == {3}


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


async def test_the_first_start_creates_every_stream_with_its_declared_configuration(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await asyncio.gather(ensure_streams(js, 3600.0), ensure_streams(js, 3600.0))  # two starting at once
        for name, declared in declared_streams(3600.0).items():
            found = (await js.stream_info(name)).config
            assert stream_differences(found, declared) == []
            assert found.num_replicas == 1 and found.duplicate_window == 120.0
        events = (await js.stream_info(EVENTS_STREAM)).config
        assert events.max_age == 3600.0 and events.retention == RetentionPolicy.LIMITS
        commands = (await js.stream_info(COMMANDS_STREAM)).config
        assert commands.retention == RetentionPolicy.WORK_QUEUE and not commands.max_age
        assert (await js.stream_info(DLQ_STREAM)).config.max_age == 30 * 24 * 3600.0
    finally:
        await nc.close()


async def test_a_more_generous_stream_is_left_as_it_is_and_the_difference_logged(nats_url: str) -> None:
    """A longer max age and duplicate window than declared, no overwrite: a service with a
    shorter NOETL_EVENTS_MAX_AGE_SECONDS starting later must not shrink the log."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        generous = dataclasses.replace(events_stream_config(14 * 24 * 3600.0), duplicate_window=600.0)
        await js.add_stream(generous)
        with structlog.testing.capture_logs() as logs:
            await ensure_streams(js, streams=[EVENTS_STREAM])
        found = (await js.stream_info(EVENTS_STREAM)).config
        assert (found.max_age, found.duplicate_window) == (14 * 24 * 3600.0, 600.0)
        differs = {e["setting"]: e for e in logs if e["event"] == "stream_config_differs"}
        assert set(differs) == {"max_age", "duplicate_window"}
        assert (
            differs["max_age"]["found"] == 14 * 24 * 3600.0
            and differs["max_age"]["declared"] == 7 * 24 * 3600.0
        )
        assert not any(e["unsafe"] for e in differs.values())
        with pytest.raises(NotFoundError):  # not asked for, not made
            await js.stream_info(COMMANDS_STREAM)
    finally:
        await nc.close()


_WEEK = 7 * 24 * 3600.0


def events_stream_config(max_age_seconds: float) -> StreamConfig:
    return declared_streams(max_age_seconds)[EVENTS_STREAM]


@pytest.mark.parametrize(
    ("existing", "setting"),
    [
        (events_stream_config(_WEEK), "num_replicas"),  # declared with 3 replicas below
        (dataclasses.replace(events_stream_config(_WEEK), subjects=["noetl.events.default.>"]), "subjects"),
        (dataclasses.replace(events_stream_config(_WEEK), retention=RetentionPolicy.INTEREST), "retention"),
        (dataclasses.replace(events_stream_config(_WEEK), discard=DiscardPolicy.NEW), "discard"),
        (dataclasses.replace(events_stream_config(_WEEK), storage=StorageType.MEMORY), "storage"),
        (events_stream_config(3600.0), "max_age"),
        (dataclasses.replace(events_stream_config(_WEEK), duplicate_window=10.0), "duplicate_window"),
        (dataclasses.replace(events_stream_config(_WEEK), max_msgs=1000), "max_msgs"),
        (dataclasses.replace(events_stream_config(_WEEK), max_bytes=1 << 20), "max_bytes"),
    ],
)
async def test_an_unsafe_difference_refuses_the_start_and_leaves_the_stream_alone(
    nats_url: str, existing: StreamConfig, setting: str
) -> None:
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(existing)
        before = (await js.stream_info(EVENTS_STREAM)).config
        replicas = 3 if setting == "num_replicas" else 1
        with structlog.testing.capture_logs() as logs, pytest.raises(StreamConfigConflict) as refused:
            await ensure_streams(js, _WEEK, replicas=replicas, streams=[EVENTS_STREAM])
        assert [d.setting for d in refused.value.differences] == [setting]
        assert isinstance(refused.value, ConfigError)  # run_service: one line, exit 2
        assert f"NOETL_EVENTS.{setting} is " in str(refused.value)
        assert [e["setting"] for e in logs if e["event"] == "stream_config_differs" and e["unsafe"]] == [
            setting
        ]
        assert (await js.stream_info(EVENTS_STREAM)).config == before  # never overwritten
    finally:
        await nc.close()
