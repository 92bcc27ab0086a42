"""Health and metrics endpoints for the background services (publisher, projector, worker).

``/healthz`` answers while the process's loop is alive; ``/readyz`` reflects the
service's own readiness callback (connected to NATS and the control-api, loop running);
``/metrics`` is the prometheus registry.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import uvicorn
from litestar import Litestar, MediaType, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


def build_ops_app(ready: Callable[[], bool], details: Callable[[], dict[str, Any]] | None = None) -> Litestar:
    @get("/healthz", media_type=MediaType.JSON, sync_to_thread=False)
    def healthz() -> dict[str, Any]:
        return {"status": "ok"}

    @get("/readyz", media_type=MediaType.JSON, sync_to_thread=False)
    def readyz() -> Response[dict[str, Any]]:
        is_ready = ready()
        body: dict[str, Any] = {"status": "ready" if is_ready else "not_ready"}
        if details is not None:
            body.update(details())
        return Response(body, status_code=200 if is_ready else 503)

    @get("/metrics", sync_to_thread=False)
    def metrics() -> Response[bytes]:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    return Litestar(route_handlers=[healthz, readyz, metrics], openapi_config=None, logging_config=None)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the service's own runner."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_ops(
    host: str,
    port: int,
    ready: Callable[[], bool],
    details: Callable[[], dict[str, Any]] | None = None,
) -> AsyncIterator[None]:
    """Serve the ops endpoints on ``host:port`` for the duration of the context."""
    config = uvicorn.Config(
        build_ops_app(ready, details),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    try:
        yield
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
