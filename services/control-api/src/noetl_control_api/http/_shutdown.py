"""Let SIGTERM release parked long-polls before the server drains requests.

granian waits for in-flight requests before it runs the app's lifespan shutdown, so a
publisher's long-poll (up to ``wait_ms``) or a client's ``GET /api/executions/{id}?wait=``
would hold a rolling restart for that long. The handler chains in front of whatever
Python-level handler is installed; asyncio's own dispatch (through the loop's wakeup fd)
still runs granian's shutdown as before.
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
