"""``noetl-projector``: wire config, NATS, the control-api client and ops endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

from noetl_common import ControlPlaneClient, NatsLink, configure_logging, run_service, serve_ops

from ._config import ProjectorConfig
from ._metrics import SERVICE
from ._projector import Projector


async def serve(stop: asyncio.Event) -> None:
    """Run the projector until ``stop`` is set, then finish the batch in hand and return."""
    config = ProjectorConfig.from_env()
    log = configure_logging(SERVICE, config.log_level)
    link = NatsLink(
        config.nats_url,
        user=config.nats_user,
        password=config.nats_password,
        name=f"{SERVICE}-{config.settings.shard}",
        log=log,
        max_backoff=config.settings.max_backoff_seconds,
    )
    projector: Projector | None = None

    def ready() -> bool:
        return projector is not None and projector.ready()

    def details() -> dict[str, Any]:
        return projector.details() if projector is not None else {"nats_connected": link.connected}

    async with (
        ControlPlaneClient(config.server_url, internal_token=config.internal_token) as client,
        serve_ops(config.metrics_host, config.metrics_port, ready, details),
    ):
        log.info(
            "projector_starting",
            server_url=config.server_url,
            nats_url=config.nats_url,
            shard=config.settings.shard,
            shard_count=config.settings.shard_count,
        )
        try:
            nc = await link.connect(stop)
            if nc is not None:
                projector = Projector(
                    client, nc.jetstream(), config.settings, connected=lambda: link.connected, log=log
                )
                await projector.run(stop)
        finally:
            await link.close()
        log.info("projector_stopped")


def main() -> None:
    """Console entry point."""
    run_service(serve)


if __name__ == "__main__":
    main()
