"""A small HTTP server on loopback for tests that need a real peer (a token endpoint, a paged
API): a handler base that answers JSON without an access log, and a server run in a thread
for the length of a ``with`` block."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

S = TypeVar("S", bound=ThreadingHTTPServer)


class JsonHandler(BaseHTTPRequestHandler):
    """Base of a test server's handler: :meth:`send_json`, and nothing written to stderr."""

    def send_json(self, status: int, body: Any) -> None:
        """``body`` as JSON (``bytes`` are sent as they are) with its length."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def local_http(handler: type[BaseHTTPRequestHandler], server_class: type[S]) -> Iterator[S]:
    """``server_class`` serving ``handler`` on a free loopback port until the block ends."""
    server = server_class(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def url_of(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"
