"""Let SIGTERM release parked outbox long-polls before the server drains requests.

granian waits for in-flight requests before it runs the app's lifespan shutdown, so a
publisher's long-poll (up to ``wait_ms``) would hold a rolling restart for that long. The
handler chains in front of whatever Python-level handler is installed; asyncio's own
dispatch (through the loop's wakeup fd) still runs granian's shutdown as before.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from types import FrameType
from typing import Any

from ..application import OutboxService


def release_long_polls_on_signal(outbox: OutboxService) -> None:
    """Install the chained SIGTERM/SIGINT handlers; a no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)

        def handler(signum: int, frame: FrameType | None, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(outbox.close)
            if callable(previous):
                previous(signum, frame)

        signal.signal(sig, handler)
