"""``noetl-outbox-publisher``: wire config, NATS, the control-api client and ops endpoints."""

from __future__ import annotations

import asyncio
from typing import Any

from noetl_common import ControlPlaneClient, NatsLink, configure_logging, run_service, serve_ops

from ._config import PublisherConfig
from ._metrics import SERVICE
from ._relay import OutboxPublisher


async def serve(stop: asyncio.Event) -> None:
    """Run the publisher until ``stop`` is set, then finish the batch in hand and return."""
    config = PublisherConfig.from_env()
    log = configure_logging(SERVICE, config.log_level)
    link = NatsLink(
        config.nats_url,
        user=config.nats_user,
        password=config.nats_password,
        name=SERVICE,
        log=log,
        max_backoff=config.relay.max_backoff_seconds,
    )
    publisher: OutboxPublisher | None = None

    def ready() -> bool:
        return publisher is not None and publisher.ready()

    def details() -> dict[str, Any]:
        return publisher.details() if publisher is not None else {"nats_connected": link.connected}

    async with (
        ControlPlaneClient(config.server_url, internal_token=config.internal_token) as client,
        serve_ops(config.metrics_host, config.metrics_port, ready, details),
    ):
        log.info("publisher_starting", server_url=config.server_url, nats_url=config.nats_url)
        try:
            nc = await link.connect(stop)
            if nc is not None:
                publisher = OutboxPublisher(
                    client, nc.jetstream(), config.relay, connected=lambda: link.connected, log=log
                )
                await publisher.run(stop)
        finally:
            await link.close()
        log.info("publisher_stopped")


def main() -> None:
    """Console entry point."""
    run_service(serve)


if __name__ == "__main__":
    main()
