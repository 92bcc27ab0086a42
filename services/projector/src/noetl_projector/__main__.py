"""``noetl-projector``: wire config, NATS, the control-api client and ops endpoints."""

from __future__ import annotations

import asyncio

from noetl_common import configure_logging, run_relay, run_service

from ._config import ProjectorConfig
from ._metrics import SERVICE
from ._projector import Projector


async def serve(stop: asyncio.Event) -> None:
    """Run the projector until ``stop`` is set, then finish the batch in hand and return."""
    config = ProjectorConfig.from_env()
    log = configure_logging(SERVICE, config.log_level)
    log.info(
        "projector_starting",
        server_url=config.server_url,
        nats_url=config.nats_url,
        shard=config.settings.shard,
        shard_count=config.settings.shard_count,
    )
    await run_relay(
        stop,
        config,
        name=f"{SERVICE}-{config.settings.shard}",
        metrics_bind=(config.metrics_host, config.metrics_port),
        max_backoff=config.settings.max_backoff_seconds,
        build=lambda client, nc, connected: Projector(
            client, nc, config.settings, connected=connected, log=log
        ),
        log=log,
    )
    log.info("projector_stopped")


def main() -> None:
    """Console entry point."""
    run_service(serve)


if __name__ == "__main__":
    main()
