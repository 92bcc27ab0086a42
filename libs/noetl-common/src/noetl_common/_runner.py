"""Run a service's main coroutine on the configured loop with graceful SIGTERM/SIGINT handling."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable

from ._config import ConfigError
from ._gc import settle_heap
from ._loop import event_loop_factory


def run_service(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Call ``main(stop)`` on the ``NOETL_EVENT_LOOP`` loop; SIGTERM or SIGINT sets ``stop``.

    Bad config exits 2 with one line.
    """

    async def _entry() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        settle_heap()  # the modules are loaded: set them aside from the collector
        try:
            await main(stop)
        finally:
            # uvloop leaves its handlers installed after close; give the defaults back
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    try:
        with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
            runner.run(_entry())
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
