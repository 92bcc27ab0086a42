"""Let SIGTERM release parked long-polls before the server drains requests.

uvicorn waits for in-flight requests (up to ``NOETL_API_SHUTDOWN_GRACE_SECONDS``) before it
runs the app's lifespan shutdown, so a publisher's long-poll (up to ``wait_ms``) or a
client's ``GET /api/executions/{id}?wait=`` would hold a rolling restart for that long. The
handler is installed at the app's startup and chains in front of whatever Python-level
handler is there then: uvicorn's ``Server.handle_exit``, which its ``capture_signals`` put in
before the lifespan started, and which still begins the shutdown.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any


def release_long_polls_on_signal(*releases: Callable[[], None]) -> None:
    """Install the chained SIGTERM/SIGINT handlers calling ``releases`` in the loop; a no-op
    off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            for release in releases:
                loop.call_soon_threadsafe(release)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)
