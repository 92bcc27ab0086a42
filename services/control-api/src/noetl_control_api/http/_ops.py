"""Health, readiness and metrics."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from litestar import MediaType, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from ..application import OutboxService
from ._auth import PUBLIC
from ._services import services_of


@get("/api/health", media_type=MediaType.JSON, tags=["ops"], opt=PUBLIC)
async def api_health() -> dict[str, str]:
    """Liveness, under the API prefix as in the reference."""
    return {"status": "ok"}


@get("/healthz", media_type=MediaType.JSON, tags=["ops"], opt=PUBLIC)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@get("/readyz", media_type=MediaType.JSON, tags=["ops"], opt=PUBLIC)
async def readyz(state: State) -> Response[dict[str, Any]]:
    """Readiness: the database answers within two seconds."""
    services = services_of(state)
    try:
        async with asyncio.timeout(2.0), services.pool.connection() as conn:
            await conn.execute("SELECT 1")
    except Exception as exc:
        return Response({"status": "not_ready", "database": str(exc)[:200]}, status_code=503)
    return Response({"status": "ready", "outbox_listener": services.notifier.connected})


@get("/metrics", tags=["ops"], opt=PUBLIC)
async def metrics(outbox: NamedDependency[OutboxService]) -> Response[bytes]:
    """Prometheus exposition; refreshes the outbox backlog gauge first."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            await outbox.pending_count()
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


OPS_HANDLERS = [api_health, healthz, readyz, metrics]
