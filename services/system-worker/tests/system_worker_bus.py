"""A JetStream helper of the worker tests; the control-api fake is ``noetl_dev.fakes.FakeControlPlane``.

NATS is always a real nats-server (``nats_url`` from noetl_dev's plugin).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from noetl_common import CommandNotification, command_subject
from noetl_dev.testing import eventually


class Bus:
    """The test's own JetStream client: publishes notifications, inspects ack state."""

    def __init__(self, nc: nats.NATS, js: JetStreamContext) -> None:
        self.nc = nc
        self.js = js

    async def publish(self, note: CommandNotification, pool: str = "shared") -> None:
        await self.js.publish(command_subject(pool, note.execution_id), msgspec.json.encode(note))

    async def publish_raw(self, data: bytes, pool: str = "shared") -> None:
        await self.js.publish(command_subject(pool, 1), data)

    async def stream_messages(self) -> int:
        """Messages still in NOETL_COMMANDS (work-queue: an acked message is removed)."""
        info = await self.js.stream_info("NOETL_COMMANDS")
        return info.state.messages

    async def consumer(self, pool: str = "shared") -> tuple[int, int]:
        """(num_ack_pending, num_pending) of the pool's durable consumer."""
        info = await self.js.consumer_info("NOETL_COMMANDS", f"noetl_worker_pool_{pool}")
        return info.num_ack_pending, info.num_pending

    async def fetch_one(self, pool: str = "shared", timeout: float = 5.0) -> Msg:
        """Pull one message from the pool's consumer as another worker would."""
        sub = await self.js.pull_subscribe_bind(durable=f"noetl_worker_pool_{pool}", stream="NOETL_COMMANDS")
        try:
            (msg,) = await sub.fetch(1, timeout=timeout)
            return msg
        finally:
            await sub.unsubscribe()

    async def until(self, check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
        """Poll JetStream state until ``check`` holds (it sends no notification for ack state)."""
        await eventually(check, timeout)
