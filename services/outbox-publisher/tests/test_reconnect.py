"""The publisher rides out a NATS restart: no crash, rows published once it is back."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import structlog
from noetl_common import OutboxRow, event_subject
from noetl_dev import start_nats
from noetl_outbox_publisher import NatsLink, OutboxPublisher, RelaySettings


def row(outbox_id: int) -> OutboxRow:
    payload = {"execution_id": 7, "event_id": outbox_id, "event_type": "command.started"}
    return OutboxRow(
        outbox_id=outbox_id, event_id=outbox_id, execution_id=7, subject=event_subject(7, 1), payload=payload
    )


async def test_publishing_resumes_after_nats_restarts(tmp_path: Path, outbox: Any) -> None:
    outbox.reoffer_failed = True
    server, url = start_nats(tmp_path)
    port = int(url.rpartition(":")[2])
    stop = asyncio.Event()
    link = NatsLink(url, user=None, password=None, name="test", log=structlog.get_logger(), max_backoff=0.2)
    nc = await link.connect(stop)
    assert nc is not None
    settings = dataclasses.replace(
        RelaySettings(), wait_ms=100, ack_timeout_seconds=1, max_backoff_seconds=0.2
    )
    publisher = OutboxPublisher(outbox, nc, settings, connected=lambda: link.connected)
    task = asyncio.create_task(publisher.run(stop))
    try:
        await outbox.add(row(1))
        await outbox.wait_for(lambda: outbox.published == {1})

        await asyncio.to_thread(server.stop)
        await outbox.add(row(2))
        server, _ = await asyncio.to_thread(start_nats, tmp_path, port)

        await outbox.wait_for(lambda: outbox.published == {1, 2}, timeout=30)
        assert not task.done()
        info = await nc.jetstream().stream_info("NOETL_EVENTS")
        assert info.state.messages == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await link.close()
        await asyncio.to_thread(server.stop)
