"""Stream and consumer definitions against a real nats-server."""

import nats
from noetl_common import COMMANDS_STREAM, EVENTS_STREAM, ensure_consumer, ensure_streams, pool_consumer_config


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
