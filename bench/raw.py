"""Raw limits of this machine, measured in the same run as the suite's figures.

JetStream async publish (with Nats-Msg-Id) and pull+ack rates with nats-py, and a
set-based Postgres insert (`INSERT ... SELECT unnest(%b arrays)`) rate.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import nats
import psycopg
from nats.js.api import StreamConfig

PAYLOAD = msgspec.json.encode({"execution_id": 1, "event_type": "call.done", "context": {"x": "y" * 120}})


async def nats_publish_async_rate(url: str, n: int) -> float:
    """Messages/s for publish_async with a Nats-Msg-Id header, all acks awaited."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=4000)
        await js.add_stream(StreamConfig(name="RAW_PUB", subjects=["raw.pub"], duplicate_window=120))
        start = time.perf_counter()
        futures = [
            await js.publish_async("raw.pub", PAYLOAD, headers={"Nats-Msg-Id": str(i)}) for i in range(n)
        ]
        await asyncio.gather(*futures)
        elapsed = time.perf_counter() - start
        await js.delete_stream("RAW_PUB")
        return n / elapsed
    finally:
        await nc.close()


async def nats_pull_ack_rate(url: str, n: int, batch: int = 500) -> float:
    """Messages/s for pull fetch in batches + an ack per message."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream(publish_async_max_pending=4000)
        await js.add_stream(StreamConfig(name="RAW_PULL", subjects=["raw.pull"]))
        await asyncio.gather(*[await js.publish_async("raw.pull", PAYLOAD) for _ in range(n)])
        sub = await js.pull_subscribe("raw.pull", durable="raw", stream="RAW_PULL")
        got = 0
        start = time.perf_counter()
        while got < n:
            msgs = await sub.fetch(batch, timeout=5)
            for msg in msgs:
                await msg.ack()
            got += len(msgs)
        elapsed = time.perf_counter() - start
        await js.delete_stream("RAW_PULL")
        return n / elapsed
    finally:
        await nc.close()


def pg_unnest_insert_rate(url: str, n: int, batch: int = 1000) -> float:
    """Rows/s for a set-based insert shaped like the projection (binary array parameters)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("drop table if exists raw_event")
        conn.execute(
            "create table raw_event (event_id bigint primary key, execution_id bigint, "
            "event_type text, context jsonb)"
        )
        context = '{"x": "' + "y" * 120 + '"}'
        start = time.perf_counter()
        for offset in range(0, n, batch):
            ids = list(range(offset + 1, min(n, offset + batch) + 1))
            conn.execute(
                "insert into raw_event select * from unnest(%b::bigint[], %b::bigint[], %b::text[], "
                "%b::jsonb[]) on conflict do nothing",
                (ids, [1] * len(ids), ["call.done"] * len(ids), [context] * len(ids)),
            )
        elapsed = time.perf_counter() - start
        conn.execute("drop table raw_event")
        return n / elapsed
