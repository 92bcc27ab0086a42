"""The shape every relay service shares: one NATS link, one control-api client, ops endpoints,
and a loop that runs until stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from nats.aio.client import Client as NATS
from structlog.typing import FilteringBoundLogger

from ._client import ControlPlaneClient
from ._config import ServiceEnv
from ._nats_link import NatsLink
from ._ops import serve_ops


class RelayLoop(Protocol):
    """A service loop: ``run`` until stop is set; ``ready``/``details`` feed ``/readyz``."""

    async def run(self, stop: asyncio.Event) -> None: ...

    def ready(self) -> bool: ...

    def details(self) -> dict[str, Any]: ...


BuildLoop = Callable[[ControlPlaneClient, NATS, Callable[[], bool]], RelayLoop]


async def run_relay(
    stop: asyncio.Event,
    config: ServiceEnv,
    *,
    name: str,
    metrics_bind: tuple[str, int],
    max_backoff: float,
    build: BuildLoop,
    log: FilteringBoundLogger,
    on_connect: Callable[[NATS], None] | None = None,
) -> None:
    """Serve ops, connect to NATS (stop-aware, retried), build the loop and run it until ``stop``.

    ``build(client, nc, connected)`` makes the loop once NATS is reachable; readiness is false
    until then and reports the link's state. ``on_connect(nc)`` is told the connection first
    (e.g. to read the server's limits from it).
    """
    link = NatsLink(
        config.nats_url,
        user=config.nats_user,
        password=config.nats_password,
        name=name,
        log=log,
        max_backoff=max_backoff,
    )
    loop: RelayLoop | None = None

    def ready() -> bool:
        return loop is not None and loop.ready()

    def details() -> dict[str, Any]:
        return loop.details() if loop is not None else {"nats_connected": link.connected}

    async with (
        ControlPlaneClient(config.server_url, token=config.api_token) as client,
        serve_ops(*metrics_bind, ready, details),
    ):
        try:
            nc = await link.connect(stop)
            if nc is not None:
                if on_connect is not None:
                    on_connect(nc)
                loop = build(client, nc, lambda: link.connected)
                await loop.run(stop)
        finally:
            await link.close()
