"""Run a service's main coroutine with graceful SIGTERM/SIGINT handling."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from ._config import ConfigError


def run_service(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Call ``main(stop)``; SIGTERM or SIGINT sets ``stop``. Bad config exits 2 with one line."""

    async def _entry() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(_entry())
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
