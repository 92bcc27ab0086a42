"""``noetl-outbox-publisher``: wire config, NATS, the control-api client and ops endpoints."""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NATS
from noetl_common import configure_logging, run_relay, run_service

from ._config import PublisherConfig
from ._metrics import SERVICE
from ._relay import OutboxPublisher


async def serve(stop: asyncio.Event) -> None:
    """Run the publisher until ``stop`` is set, then finish the batch in hand and return."""
    config = PublisherConfig.from_env()
    log = configure_logging(SERVICE, config.log_level)
    log.info("publisher_starting", server_url=config.server_url, nats_url=config.nats_url)
    connection: list[NATS] = []  # the server's max_payload is read from it (a reconnect may change it)

    await run_relay(
        stop,
        config,
        name=SERVICE,
        metrics_bind=(config.metrics_host, config.metrics_port),
        max_backoff=config.relay.max_backoff_seconds,
        build=lambda client, nc, connected: OutboxPublisher(
            client,
            nc,
            config.relay,
            connected=connected,
            log=log,
            max_payload=lambda: connection[0].max_payload,
        ),
        log=log,
        on_connect=connection.append,
    )
    log.info("publisher_stopped")


def main() -> None:
    """Console entry point."""
    run_service(serve)


if __name__ == "__main__":
    main()
