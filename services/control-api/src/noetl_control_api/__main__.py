"""``noetl-control-api [serve|migrate]``: run the API under granian, or apply migrations and exit."""

from __future__ import annotations

import argparse
import asyncio
import sys

from noetl_common import ConfigError, configure_logging

from ._logjson import granian_log_config
from ._settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``noetl-control-api`` script."""
    parser = argparse.ArgumentParser(prog="noetl-control-api", description=__doc__)
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "migrate"])
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    log = configure_logging("control-api", settings.log_level)

    from .store import apply_migrations

    try:
        applied = asyncio.run(apply_migrations(settings.database_url))
    except Exception as exc:
        log.error("migrations_failed", error=str(exc))
        raise SystemExit(1) from None
    log.info("migrations_applied", versions=applied)
    if args.command == "migrate":
        return
    from .application import check_key_present

    try:
        asyncio.run(check_key_present(settings.database_url, settings.credentials_key))
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None

    from granian import Granian
    from granian.constants import Interfaces, Loops

    Granian(
        "noetl_control_api.http:app_from_env",
        factory=True,
        address=settings.bind_host,
        port=settings.bind_port,
        interface=Interfaces.ASGI,
        workers=1,
        loop=Loops(settings.event_loop),
        log_access=False,
        log_dictconfig=granian_log_config(),
    ).serve()


if __name__ == "__main__":
    main()
