"""Pipelined publishes and their acks against a real nats-server."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import nats
import nats.js.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig
from noetl_outbox_publisher._acks import AckedPublisher


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[NATS]:
    client = await nats.connect(nats_url)
    try:
        yield client
    finally:
        await client.close()


async def test_each_publish_resolves_with_its_own_ack_and_a_repeat_is_a_duplicate(nc: NATS) -> None:
    name = f"ACKS_{secrets.token_hex(4).upper()}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
    publisher = AckedPublisher(nc)
    await publisher.start()
    try:
        futures = [
            await publisher.publish(f"{name.lower()}.x", b"%d" % i, {"Nats-Msg-Id": str(i)}) for i in range(50)
        ]
        acks = await asyncio.gather(*futures)
        assert [a.seq for a in acks] == list(range(1, 51))
        assert {a.stream for a in acks} == {name} and not any(a.duplicate for a in acks)
        again = await (await publisher.publish(f"{name.lower()}.x", b"7", {"Nats-Msg-Id": "7"}))
        assert again.duplicate and again.seq == 8
        assert publisher.waiting() == 0
    finally:
        await publisher.stop()
        await js.delete_stream(name)


async def test_a_subject_no_stream_takes_fails_its_future(nc: NATS) -> None:
    publisher = AckedPublisher(nc)
    await publisher.start()
    try:
        future = await publisher.publish(f"nowhere.{secrets.token_hex(4)}", b"x", {"Nats-Msg-Id": "1"})
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await future
    finally:
        await publisher.stop()


async def test_publishes_given_up_on_are_forgotten(nc: NATS) -> None:
    # a listener that never answers: no ack and no "no responders" either
    silent = f"silent.{secrets.token_hex(4)}"
    listener = await nc.subscribe(silent)
    publisher = AckedPublisher(nc)
    await publisher.start()
    try:
        given_up = [await publisher.publish(silent, b"x", {"Nats-Msg-Id": str(i)}) for i in range(10_000)]
        for future in given_up:
            future.cancel()  # as the relay does at its ack timeout
        assert publisher.waiting() == 10_000
        kept = await publisher.publish(silent, b"y", {"Nats-Msg-Id": "last"})
        assert publisher.waiting() == 1 and not kept.done()
    finally:
        await publisher.stop()
        await listener.unsubscribe()
