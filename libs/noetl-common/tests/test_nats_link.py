"""NatsLink: a connect that nats-py would retry forever gives way to stop at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import MutableMapping
from typing import Any

import structlog
from noetl_common import NatsLink
from noetl_dev import free_port
from structlog.typing import FilteringBoundLogger

#: Bounds a test that would otherwise hang; never reached when the link behaves.
HANG = 30.0


class Events:
    """A logger that records the event names it is given and tells when one is seen."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._seen: dict[str, asyncio.Event] = {}

    def logger(self) -> FilteringBoundLogger:
        def record(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> Any:
            name = str(event_dict["event"])
            self.names.append(name)
            self._event(name).set()
            raise structlog.DropEvent

        log: FilteringBoundLogger = structlog.wrap_logger(
            structlog.ReturnLogger(),
            processors=[record],
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
        )
        return log

    async def wait(self, name: str) -> None:
        await asyncio.wait_for(self._event(name).wait(), HANG)

    def _event(self, name: str) -> asyncio.Event:
        return self._seen.setdefault(name, asyncio.Event())


def link_to(url: str, events: Events) -> NatsLink:
    return NatsLink(url, user=None, password=None, name="test", log=events.logger(), max_backoff=0.2)


def unfinished(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    return [task for task in asyncio.all_tasks() - before if not task.done()]


async def test_stop_ends_a_connect_while_nothing_listens() -> None:
    events = Events()
    link = link_to(f"nats://127.0.0.1:{free_port()}", events)
    before = asyncio.all_tasks()
    stop = asyncio.Event()
    connecting = asyncio.create_task(link.connect(stop))
    await events.wait("nats_error")  # refused: nats-py now retries in place, forever

    stop.set()
    assert await asyncio.wait_for(connecting, HANG) is None
    assert not link.connected
    assert "nats_connected" not in events.names and "nats_disconnected" not in events.names
    assert unfinished(before) == []
    await link.close()


async def test_stop_ends_a_connect_to_a_server_that_never_says_hello() -> None:
    accepted = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        accepted.set()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    events = Events()
    link = link_to(f"nats://127.0.0.1:{port}", events)
    before = asyncio.all_tasks()
    stop = asyncio.Event()
    try:
        connecting = asyncio.create_task(link.connect(stop))
        await asyncio.wait_for(accepted.wait(), HANG)  # connected by TCP, waiting for the server's INFO

        stop.set()
        assert await asyncio.wait_for(connecting, HANG) is None
        assert not link.connected
        assert unfinished(before) == []
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_stop_set_before_connect_returns_none() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await link_to(f"nats://127.0.0.1:{free_port()}", Events()).connect(stop) is None


async def test_connects_reports_its_state_and_closes(nats_url: str) -> None:
    events = Events()
    link = link_to(nats_url, events)
    nc = await link.connect(asyncio.Event())
    assert nc is not None and nc.is_connected and link.connected
    assert "nats_connected" in events.names
    await link.close()
    assert nc.is_closed and not link.connected
