"""Serve the app with uvicorn over httptools, with the bounds a hostile client meets first.

httptools (llhttp) parses a request head of any size and waits for it as long as the client
likes; :class:`BoundedHttpTools` caps the head at :data:`MAX_HEAD_BYTES` (431 and the
connection closed) and gives a client ``head_timeout_seconds`` (30 s) from its connection (or
the first byte of its next request) to the end of the head (the connection closed). At
``NOETL_API_MAX_CONNECTIONS`` open connections (or requests) a request gets 503 at once.
Bodies are Litestar's (``NOETL_REQUEST_MAX_BODY_BYTES``); an idle keep-alive connection is
closed after uvicorn's 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import msgspec
import uvicorn
from noetl_common import ErrorBody
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ._logjson import uvicorn_log_config
from ._settings import Settings

KiB = 1024
#: the request line and headers of one request
MAX_HEAD_BYTES = 64 * KiB


class _Refusal:
    """An ASGI app answering every request with one ErrorBody and ``connection: close``."""

    def __init__(self, status: int, reason: bytes, error: str, detail: str) -> None:
        self.status = status
        self.body = msgspec.json.encode(ErrorBody(status_code=status, error=error, detail=detail))
        self.headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(self.body)).encode()),
            (b"connection", b"close"),
        ]
        head = b"".join(name + b": " + value + b"\r\n" for name, value in self.headers)
        self.raw = b"HTTP/1.1 %d %s\r\n%s\r\n%s" % (status, reason, head, self.body)

    async def __call__(self, _scope: Any, _receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
        await send({"type": "http.response.body", "body": self.body, "more_body": False})


HEAD_TOO_LARGE = _Refusal(
    431,
    b"Request Header Fields Too Large",
    "payload_too_large",
    f"the request line and headers are over {MAX_HEAD_BYTES} bytes",
)
BUSY = _Refusal(503, b"Service Unavailable", "unavailable", "too many connections: NOETL_API_MAX_CONNECTIONS")


class BoundedHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bounded request head, in size and in time."""

    #: from the connection (or the first byte of a request) to the end of its head
    head_timeout_seconds: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn's own check answers in plain text; on_headers_complete does it with an ErrorBody
        self._max_busy, self.limit_concurrency = self.limit_concurrency, None
        self._in_head = True
        self._head_read = 0  # bytes read since the head began (an upper bound of its size)
        self._head_size = 0  # the parsed request line and headers
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_read += len(data)
        super().data_received(data)
        if self._in_head and self._head_read > MAX_HEAD_BYTES and not self.transport.is_closing():
            # a head that has not ended within the bound: answer without waiting for the rest
            self.transport.write(HEAD_TOO_LARGE.raw)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        refusal: _Refusal | None = None
        if self._head_size > MAX_HEAD_BYTES:  # the whole head came in one read
            refusal = HEAD_TOO_LARGE
        elif self._max_busy is not None and max(len(self.connections), len(self.tasks)) >= self._max_busy:
            refusal = BUSY
        if refusal is None:
            super().on_headers_complete()
            return
        app, self.app = self.app, refusal  # this request runs the refusal instead of the app
        try:
            super().on_headers_complete()
        finally:
            self.app = app

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True
        self._head_read = 0

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.head_timeout_seconds, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._in_head and not self.transport.is_closing():
            self.transport.close()


class Server(uvicorn.Server):
    """uvicorn's server; SIGTERM/SIGINT start its graceful shutdown and the process then
    exits 0 (uvicorn re-raises the signal after it, which would end the process by it)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(settings: Settings) -> None:
    """Serve ``noetl_control_api.http:app_from_env`` on the configured address until a signal."""
    config = uvicorn.Config(
        "noetl_control_api.http:app_from_env",
        factory=True,
        host=settings.bind_host,
        port=settings.bind_port,
        http=BoundedHttpTools,
        ws="none",
        interface="asgi3",
        loop=settings.event_loop,
        lifespan="on",
        access_log=False,
        log_config=uvicorn_log_config(),
        proxy_headers=False,
        server_header=False,
        limit_concurrency=settings.max_connections,
        timeout_graceful_shutdown=settings.shutdown_grace_seconds,
    )
    Server(config).run()
