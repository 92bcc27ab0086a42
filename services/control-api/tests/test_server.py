"""The HTTP server's own bounds (``BoundedHttpTools``): a request head's size and time, the
connection limit. A plain ASGI app behind it: these are checked before any route runs."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn
from noetl_control_api import BoundedHttpTools
from noetl_dev.testing import wait_until

Address = tuple[str, int]
LINE = b"GET /anything HTTP/1.1\r\nhost: test\r\n"
CLOSE = b"connection: close\r\n"
#: 60 KiB of header: under the 64 KiB bound alone, over it with MORE
BIG = b"x-big: " + b"a" * (60 * 1024) + b"\r\n"
MORE = b"x-more: " + b"a" * (8 * 1024) + b"\r\n"


async def _ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    while (await receive()).get("more_body"):  # read the whole body
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


class _Impatient(BoundedHttpTools):
    head_timeout_seconds = 0.2


@contextlib.contextmanager
def _serving(protocol: type[BoundedHttpTools] = BoundedHttpTools, **config: Any) -> Iterator[Address]:
    """Serve ``_ok`` with ``protocol`` from a thread of its own; yields the address."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    server = uvicorn.Server(
        uvicorn.Config(_ok, http=protocol, interface="asgi3", lifespan="off", log_config=None, **config)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 15, "the server to start")
        yield listener.getsockname()
    finally:
        server.should_exit = True
        thread.join(30)
        listener.close()


def _exchange(address: Address, *parts: bytes) -> bytes:
    """Send ``parts`` (one ``sendall`` each) on a new connection; all the server sends until it
    closes the connection (a socket timeout if it never does)."""
    with socket.create_connection(address, timeout=10) as conn:
        for part in parts:
            conn.sendall(part)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def _status_and_body(reply: bytes) -> tuple[bytes, dict[str, Any]]:
    head, _, body = reply.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], json.loads(body)


def test_a_request_head_over_64_kib_gets_431_and_the_connection_closed() -> None:
    with _serving() as address:
        for parts in (
            (LINE + BIG + MORE + b"\r\n",),  # a whole head
            (LINE + BIG, MORE),  # a head that has not ended yet
        ):
            status, body = _status_and_body(_exchange(address, *parts))
            assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
            assert body["status_code"] == 431 and body["error"] == "payload_too_large"


def test_a_head_within_the_bound_is_served() -> None:
    with _serving() as address:
        reply = _exchange(address, LINE + BIG + CLOSE + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nok")


def test_a_body_larger_than_the_head_bound_is_no_head() -> None:
    body = b"a" * (300 * 1024)
    head = LINE.replace(b"GET", b"POST") + CLOSE + b"content-length: %d\r\n\r\n" % len(body)
    with _serving() as address:
        reply = _exchange(address, head + body)
    assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nok")


def test_at_the_connection_limit_a_request_gets_503_with_an_error_body() -> None:
    with _serving(limit_concurrency=4) as address, contextlib.ExitStack() as held:
        for _ in range(3):
            conn = held.enter_context(socket.create_connection(address, timeout=10))
            conn.sendall(LINE + b"\r\n")
            received = b""
            while not received.endswith(b"ok"):  # served: the server counts this connection
                received += conn.recv(65536)
            conn.sendall(LINE)  # the start of a next request keeps the connection open
        status, body = _status_and_body(_exchange(address, LINE + CLOSE + b"\r\n"))
        assert status == b"HTTP/1.1 503 Service Unavailable"
        assert body["status_code"] == 503 and body["error"] == "unavailable"
        held.close()
        wait_until(
            lambda: _exchange(address, LINE + CLOSE + b"\r\n").startswith(b"HTTP/1.1 200 "),
            15,
            "a request served once the held connections are gone",
        )


def test_a_client_that_does_not_finish_its_head_in_time_is_disconnected() -> None:
    with _serving(_Impatient) as address:
        assert _exchange(address) == b""  # connected, sent nothing
        assert _exchange(address, LINE) == b""  # began a head, never ended it
        reply = _exchange(address, LINE + b"\r\n", LINE)  # one request served, the next never ends
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nok")
