"""Rows that cannot be published: dead-lettered to NOETL_DLQ and marked dead, never retried forever."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import RawStreamMsg
from noetl_common import DLQ_STREAM, EVENTS_STREAM, ConfigError, LimitsReply, OutboxRow, event_subject
from noetl_dev import start_nats
from noetl_outbox_publisher import OutboxPublisher, RelaySettings
from noetl_outbox_publisher._limits import check_max_payload

SMALL_MAX_PAYLOAD = 64 * 1024
SETTINGS = RelaySettings(batch_size=100, wait_ms=200, ack_timeout_seconds=5, max_backoff_seconds=0.2)


def row(outbox_id: int, *, pad: int = 0, subject: str | None = None, attempts: int = 0) -> OutboxRow:
    payload = {"execution_id": 7, "event_id": 900 + outbox_id, "event_type": "step.enter", "pad": "x" * pad}
    return OutboxRow(
        outbox_id=outbox_id,
        event_id=900 + outbox_id,
        execution_id=7,
        subject=subject or event_subject(7, 1),
        payload=payload,
        attempts=attempts,
    )


@pytest.fixture
def small_nats_url(noetl_state_dir: Path) -> Iterator[str]:
    """A nats-server of its own whose max_payload is SMALL_MAX_PAYLOAD."""
    proc, url = start_nats(
        noetl_state_dir / f"nats-small-{uuid.uuid4().hex[:8]}", max_payload=SMALL_MAX_PAYLOAD
    )
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture
async def small_nc(small_nats_url: str) -> AsyncIterator[NATS]:
    conn = await nats.connect(small_nats_url)
    yield conn
    await conn.close()


@pytest.fixture
def small_outbox(outbox: Any) -> Any:
    """The outbox of a control-api configured for the small server."""
    outbox.declared = LimitsReply(
        nats_max_payload=SMALL_MAX_PAYLOAD, max_event_bytes=SMALL_MAX_PAYLOAD - 8192
    )
    return outbox


async def _run_until(publisher: OutboxPublisher, outbox: Any, done: Any) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(publisher.run(stop))
    try:
        await outbox.wait_for(done)
        assert not task.done()  # the loop carries on after a dead row
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def _dlq(nc: NATS, seq: int) -> RawStreamMsg:
    return await nc.jetstream().get_msg(DLQ_STREAM, seq)


async def test_a_row_too_large_for_the_server_is_dead_lettered_at_once(
    small_nc: NATS, small_outbox: Any
) -> None:
    outbox = small_outbox
    small, big = row(1), row(2, pad=3 * SMALL_MAX_PAYLOAD)
    # fits without its headers, not with them: nats-py would send it and the server drop the link
    edge = row(3, pad=SMALL_MAX_PAYLOAD - len(msgspec.json.encode(row(3).payload)) - 4)
    after = row(4)
    publisher = OutboxPublisher(
        outbox, small_nc, SETTINGS, max_payload=lambda: small_nc.max_payload
    )
    await outbox.add(small, big, edge, after)

    await _run_until(
        publisher, outbox, lambda: outbox.published == {1, 4} and len(outbox.mark_dead_calls) == 2
    )

    assert outbox.mark_failed_calls == []  # no retry of what can never fit
    dead = {call.outbox_id: call.error for call in outbox.mark_dead_calls}
    assert set(dead) == {2, 3} and all("max_payload 65536" in error for error in dead.values())
    events = await small_nc.jetstream().stream_info(EVENTS_STREAM)
    assert events.state.messages == 2
    copies = {
        int((msg.headers or {})["Noetl-Outbox-Id"]): msg
        for msg in [await _dlq(small_nc, 1), await _dlq(small_nc, 2)]
    }
    copy = copies[2]
    assert copy.subject == "noetl.dlq.outbox.7"
    assert copy.headers is not None
    assert copy.headers["Noetl-Outbox-Id"] == "2"
    assert copy.headers["Noetl-Original-Subject"] == big.subject
    assert copy.headers["Noetl-Event-Id"] == str(big.event_id)
    assert "max_payload" in copy.headers["Noetl-Error"]
    assert copy.headers["Noetl-Body"].startswith("truncated")
    assert copy.data is not None and 0 < len(copy.data) < SMALL_MAX_PAYLOAD
    assert msgspec.json.encode(big.payload).startswith(copy.data)
    assert small_nc.is_connected


async def test_other_failures_are_retried_until_the_last_attempt_then_dead_lettered(
    small_nc: NATS, small_outbox: Any
) -> None:
    outbox = small_outbox
    settings = dataclasses.replace(SETTINGS, max_attempts=3)
    early = row(1, subject="noetl.nowhere.7", attempts=0)
    last = row(2, subject="noetl.nowhere.7", attempts=2)
    publisher = OutboxPublisher(
        outbox, small_nc, settings, max_payload=lambda: small_nc.max_payload
    )
    await outbox.add(early, last)

    await _run_until(
        publisher, outbox, lambda: bool(outbox.mark_failed_calls) and bool(outbox.mark_dead_calls)
    )

    [retried] = outbox.mark_failed_calls
    assert retried.outbox_id == 1 and retried.attempts == 1
    [dead] = outbox.mark_dead_calls
    assert dead.outbox_id == 2 and "NoStreamResponse" in dead.error
    copy = await _dlq(small_nc, 1)
    assert copy.headers is not None and copy.headers["Noetl-Original-Subject"] == "noetl.nowhere.7"
    assert "Noetl-Body" not in copy.headers
    assert copy.data is not None and msgspec.json.decode(copy.data) == last.payload


async def test_the_loop_refuses_to_start_on_a_server_that_takes_less_than_the_api_writes(
    small_nc: NATS, outbox: Any
) -> None:
    publisher = OutboxPublisher(
        outbox, small_nc, SETTINGS, max_payload=lambda: small_nc.max_payload
    )
    await outbox.add(row(1))

    with pytest.raises(ConfigError, match="NOETL_NATS_MAX_PAYLOAD_BYTES=65536"):
        await asyncio.wait_for(publisher.run(asyncio.Event()), 10)

    assert outbox.claim_calls == 0  # not one row was leased to it


def test_the_refusal_is_one_line_naming_both_values() -> None:
    limits = LimitsReply(nats_max_payload=1048576, max_event_bytes=1040384)

    with pytest.raises(ConfigError) as refused:
        check_max_payload(65536, limits)
    check_max_payload(1048576, limits)
    check_max_payload(8 * 1048576, limits)

    message = str(refused.value)
    assert "\n" not in message
    assert "65536" in message and "1048576" in message and "NOETL_NATS_MAX_PAYLOAD_BYTES=65536" in message
