"""The pull fetch against a real nats-server: batches, waiting, late deliveries, redelivery."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass

import nats
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig
from noetl_common import Puller, delivery


@dataclass
class Consumer:
    nc: NATS
    stream: str
    subject: str
    name: str

    async def publish(self, count: int, start: int = 0) -> None:
        js = self.nc.jetstream()
        for i in range(start, start + count):
            await js.publish(self.subject, str(i).encode())


@pytest.fixture
async def consumer(nats_url: str) -> AsyncIterator[Consumer]:
    nc = await nats.connect(nats_url)
    name = f"PULL_{secrets.token_hex(4).upper()}"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{name.lower()}.>"]))
    await js.add_consumer(name, ConsumerConfig(durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=30))
    try:
        yield Consumer(nc, name, f"{name.lower()}.x", "c")
    finally:
        await js.delete_stream(name)
        await nc.close()


async def _puller(consumer: Consumer) -> Puller:
    puller = Puller(consumer.nc, consumer.stream, consumer.name)
    await puller.start()
    return puller


async def test_a_fetch_takes_what_is_there_in_order_and_at_most_a_batch(consumer: Consumer) -> None:
    await consumer.publish(7)
    puller = await _puller(consumer)
    first = await puller.fetch(5, timeout=5)
    rest = await puller.fetch(5, timeout=5)
    assert [m.data for m in first + rest] == [str(i).encode() for i in range(7)]
    assert len(first) == 5
    for msg in first + rest:
        await msg.ack()
    with pytest.raises(nats.errors.TimeoutError):
        await puller.fetch(5, timeout=0.3)  # nothing left: the wait ends at the timeout
    await puller.stop()


async def test_a_waiting_fetch_returns_with_the_first_message_and_keeps_later_ones(consumer: Consumer) -> None:
    puller = await _puller(consumer)
    waiting = asyncio.create_task(puller.fetch(10, timeout=30))
    await consumer.publish(1)
    got = await waiting  # well before the 30 s: the first message ends the wait
    assert [m.data for m in got] == [b"0"]
    # the request it sent still waits for 9 more: what it brings is in hand for the next fetch
    await consumer.publish(3, start=1)
    more: list[bytes] = []
    while len(more) < 3:
        more += [m.data for m in await puller.fetch(10, timeout=5)]
    assert more == [b"1", b"2", b"3"]
    await puller.stop()


async def test_delivery_counts_a_redelivery_and_what_is_pending(consumer: Consumer) -> None:
    await consumer.publish(3)
    puller = await _puller(consumer)
    first = await puller.fetch(1, timeout=5)
    assert delivery(first[0]) == (1, 1, 2)
    assert (delivery(first[0]).delivered, delivery(first[0]).pending) == (
        first[0].metadata.num_delivered,
        first[0].metadata.num_pending,
    )
    await first[0].nak()
    seen: dict[bytes, int] = {}
    while len(seen) < 3:
        for msg in await puller.fetch(3, timeout=5):
            seen[msg.data] = delivery(msg).delivered
            await msg.ack()
    assert seen == {b"0": 2, b"1": 1, b"2": 1}
    await puller.stop()


async def test_delivery_refuses_a_message_that_is_not_from_jetstream() -> None:
    from nats.aio.msg import Msg

    with pytest.raises(nats.errors.NotJSMessageError):
        delivery(Msg(None, subject="a", reply="_INBOX.x.y"))  # type: ignore[arg-type]


async def test_a_filling_fetch_waits_for_the_batch_and_a_plain_one_does_not(consumer: Consumer) -> None:
    puller = await _puller(consumer)
    await consumer.publish(1)
    assert [m.data for m in await puller.fetch(3, timeout=30)] == [b"0"]  # what there is, at once
    filling = asyncio.create_task(puller.fetch(3, timeout=30, fill=True))
    for i in range(1, 4):  # one at a time: a plain fetch would return with the first
        await consumer.publish(1, start=i)
    assert [m.data for m in await filling] == [b"1", b"2", b"3"]  # long before the 30 s
    with pytest.raises(nats.errors.TimeoutError):
        await puller.fetch(5, timeout=0.2, fill=True)  # nothing came by the timeout
    await puller.stop()
