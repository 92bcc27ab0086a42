"""Request latency by route template, as an ASGI middleware."""

from __future__ import annotations

import time

from litestar.types import ASGIApp, Message, Receive, Scope, Send

from .._metrics import REQUEST_LATENCY


def latency_middleware(app: ASGIApp) -> ASGIApp:
    """Observe every HTTP request's duration with its method, route template and status."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await app(scope, receive, capture)
        finally:
            route = scope.get("path_template") or "unmatched"
            REQUEST_LATENCY.labels(scope.get("method", "?"), route, str(status)).observe(
                time.perf_counter() - start
            )

    return middleware
