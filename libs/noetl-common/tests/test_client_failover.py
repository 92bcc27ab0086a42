"""ControlPlaneClient over several control-api replicas, against real loopback HTTP servers."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack

import pytest
from noetl_common import ApiError, ApiUnreachable, ControlPlaneClient, api_urls

PENDING = b'{"pending": 3}'


class Replica:
    """A loopback HTTP server that answers with ``statuses`` in turn (the last one from then on)
    and counts the requests it was sent."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses or (200,))
        self.hits = 0
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Replica:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "content-length" and int(value):
                await reader.readexactly(int(value))
        status = self.statuses[min(self.hits, len(self.statuses) - 1)]
        self.hits += 1
        body = PENDING if status == 200 else b'{"status": %d, "detail": "replica says %d"}' % (status, status)
        extra = b"Retry-After: 0\r\n" if status == 503 else b""
        writer.write(
            b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%s"
            b"connection: close\r\n\r\n%s" % (status, len(body), extra, body)
        )
        await writer.drain()
        writer.close()


@pytest.fixture
def dead_url() -> Iterator[Callable[[], str]]:
    """URLs of ports bound but not listening: every connection to them is refused."""
    held: list[socket.socket] = []

    def make() -> str:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        held.append(sock)
        return f"http://127.0.0.1:{sock.getsockname()[1]}"

    yield make
    for sock in held:
        sock.close()


async def _client(exits: AsyncExitStack, urls: list[str], retries: int = 5) -> ControlPlaneClient:
    return await exits.enter_async_context(
        ControlPlaneClient(",".join(urls), retries=retries, max_backoff=0.05)
    )


@pytest.fixture
async def exits() -> AsyncIterator[AsyncExitStack]:
    async with AsyncExitStack() as stack:
        yield stack


def test_api_urls_splits_strips_and_refuses_an_empty_list() -> None:
    assert api_urls(" http://a:1/, http://b:2 ,") == ("http://a:1", "http://b:2")
    assert api_urls(["http://a:1/"]) == ("http://a:1",)
    with pytest.raises(ValueError, match="no control-api URL"):
        api_urls(" , ")


async def test_one_url_retries_a_503_on_the_same_server(exits: AsyncExitStack) -> None:
    only = await exits.enter_async_context(Replica(503, 200))
    client = await _client(exits, [only.url], retries=1)
    assert await client.outbox_pending_count() == 3
    assert only.hits == 2


async def test_a_refused_connection_goes_to_the_next_replica_without_spending_an_attempt(
    exits: AsyncExitStack, dead_url: Callable[[], str]
) -> None:
    live = await exits.enter_async_context(Replica(200))
    client = await _client(exits, [dead_url(), live.url], retries=0)
    assert await client.outbox_pending_count() == 3
    # the client stays on the replica that answered
    assert client.base_url == live.url
    assert await client.outbox_pending_count() == 3
    assert live.hits == 2


async def test_a_claim_without_retries_survives_a_dead_replica(
    exits: AsyncExitStack, dead_url: Callable[[], str]
) -> None:
    live = await exits.enter_async_context(Replica(409))
    client = await _client(exits, [dead_url(), live.url])
    with pytest.raises(ApiError) as raised:
        await client.claim_command(42, "w-1")
    # the live replica's own answer, not the dead one's connection error
    assert raised.value.status_code == 409 and live.hits == 1


async def test_a_503_fails_over_and_later_calls_stay_on_the_new_replica(exits: AsyncExitStack) -> None:
    busy = await exits.enter_async_context(Replica(503))
    live = await exits.enter_async_context(Replica(200))
    client = await _client(exits, [busy.url, live.url], retries=1)
    assert await client.outbox_pending_count() == 3
    assert await client.outbox_pending_count() == 3
    assert (busy.hits, live.hits) == (1, 2)


async def test_without_retries_a_503_is_raised_and_the_next_call_goes_to_the_next_replica(
    exits: AsyncExitStack,
) -> None:
    busy = await exits.enter_async_context(Replica(503))
    live = await exits.enter_async_context(Replica(200))
    client = await _client(exits, [busy.url, live.url], retries=0)
    with pytest.raises(ApiError) as raised:
        await client.outbox_pending_count()
    assert raised.value.status_code == 503 and live.hits == 0
    assert await client.outbox_pending_count() == 3
    assert (busy.hits, live.hits) == (1, 1)


async def test_replicas_that_all_fail_spend_the_attempts_in_turn_then_raise(exits: AsyncExitStack) -> None:
    first = await exits.enter_async_context(Replica(502))
    second = await exits.enter_async_context(Replica(504))
    client = await _client(exits, [first.url, second.url], retries=2)
    with pytest.raises(ApiError) as raised:
        await client.outbox_pending_count()
    assert raised.value.status_code == 502
    assert (first.hits, second.hits) == (2, 1)


async def test_a_client_error_is_raised_at_once_and_never_sent_elsewhere(exits: AsyncExitStack) -> None:
    refusing = await exits.enter_async_context(Replica(404))
    live = await exits.enter_async_context(Replica(200))
    client = await _client(exits, [refusing.url, live.url], retries=3)
    with pytest.raises(ApiError) as raised:
        await client.outbox_pending_count()
    assert raised.value.status_code == 404
    assert (refusing.hits, live.hits) == (1, 0)
    assert client.base_url == refusing.url


async def test_every_replica_refusing_raises_the_connection_error(
    exits: AsyncExitStack, dead_url: Callable[[], str]
) -> None:
    client = await _client(exits, [dead_url(), dead_url()], retries=1)
    with pytest.raises(ApiUnreachable) as raised:
        await client.outbox_pending_count()
    assert not raised.value.sent


async def test_plugin_fetch_fails_over_on_a_refused_connection(
    exits: AsyncExitStack, dead_url: Callable[[], str]
) -> None:
    live = await exits.enter_async_context(Replica(200))
    client = await _client(exits, [dead_url(), live.url])
    fetched = await client.get_plugin("system/echo", 1)
    assert fetched.data == PENDING and live.hits == 1
