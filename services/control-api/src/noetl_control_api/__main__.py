"""``noetl-control-api [serve|migrate]``: run the API under uvicorn, or apply migrations and exit."""

from __future__ import annotations

import argparse
import asyncio
import sys

from noetl_common import ConfigError, configure_logging

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

    from ._server import serve

    serve(settings)


if __name__ == "__main__":
    main()
