"""The projector rides out a NATS restart: no crash, later events projected once it is back."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import msgspec
import nats
import structlog
from noetl_common import Event, ensure_streams, event_subject
from noetl_dev import start_nats
from noetl_projector import NatsLink, Projector, ProjectorSettings


async def publish(url: str, event_id: int) -> None:
    nc = await nats.connect(url)
    try:
        event = Event(execution_id=7, event_id=event_id, event_type="command.started")
        await nc.jetstream().publish(event_subject(7, 1), msgspec.json.encode(event))
    finally:
        await nc.close()


async def test_projection_resumes_after_nats_restarts(tmp_path: Path, sink: Any) -> None:
    server, url = start_nats(tmp_path)
    port = int(url.rpartition(":")[2])
    stop = asyncio.Event()
    link = NatsLink(url, user=None, password=None, name="test", log=structlog.get_logger(), max_backoff=0.2)
    nc = await link.connect(stop)
    assert nc is not None
    await ensure_streams(nc.jetstream())
    settings = dataclasses.replace(ProjectorSettings(), fetch_timeout_seconds=0.2, max_backoff_seconds=0.2)
    projector = Projector(sink, nc, settings, connected=lambda: link.connected)
    task = asyncio.create_task(projector.run(stop))
    try:
        await publish(url, 1)
        await sink.wait_for(lambda: sink.event_ids() == {1})

        await asyncio.to_thread(server.stop)
        server, _ = await asyncio.to_thread(start_nats, tmp_path, port)
        await publish(url, 2)

        await sink.wait_for(lambda: sink.event_ids() == {1, 2}, timeout=30)
        assert not task.done()
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await link.close()
        await asyncio.to_thread(server.stop)
