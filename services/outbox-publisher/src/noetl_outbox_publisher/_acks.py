"""Pipelined JetStream publishes whose acks come back on one inbox subscription.

nats-py's ``publish_async`` pays per message for an asyncio semaphore under ``wait_for``, a
``urandom`` call, a done callback, ``json.loads`` of the ack and a ``PubAck`` dataclass: on a
busy publisher a quarter of its CPU. :class:`AckedPublisher` sends each message with a reply
subject ``<inbox>.<n>`` and resolves its future when that ack arrives, decoded by msgspec.
How many are in flight is bounded by the relay (two batch sizes), not here.

A future the caller gives up on (the relay's ack timeout cancels it) is dropped from the
table on a sweep once the table has grown past twice the size it had after the last one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import nats.js.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

_NO_RESPONDERS = "503"
_FIRST_SWEEP = 10_000


class Ack(msgspec.Struct):
    """What JetStream answers to a publish it stored (or dropped as a duplicate)."""

    stream: str = ""
    seq: int = 0
    duplicate: bool = False


class _Reply(msgspec.Struct):
    stream: str = ""
    seq: int = 0
    duplicate: bool = False
    error: dict[str, Any] | None = None


class AckedPublisher:
    """Publishes to JetStream without waiting; :meth:`start` before the first publish."""

    def __init__(self, nc: NATS) -> None:
        self._nc = nc
        self._prefix = ""
        self._sub: Any = None
        self._waiting: dict[str, asyncio.Future[Ack]] = {}
        self._sequence = 0
        self._sweep_at = _FIRST_SWEEP
        self._decode = msgspec.json.Decoder(_Reply).decode

    async def start(self) -> None:
        self._prefix = self._nc.new_inbox() + "."
        self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    def waiting(self) -> int:
        """Publishes whose ack has not come (cancelled ones until the next sweep)."""
        return len(self._waiting)

    async def publish(self, subject: str, data: bytes, headers: dict[str, str]) -> asyncio.Future[Ack]:
        """Send one message; the future resolves with its ack, or fails with the error JetStream
        answered (``NoStreamResponseError`` when no stream takes the subject)."""
        if len(self._waiting) >= self._sweep_at:
            self._sweep()
        self._sequence += 1
        token = str(self._sequence)
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self._nc.publish(subject, data, reply=self._prefix + token, headers=headers)
        except BaseException:
            del self._waiting[token]
            raise
        return future

    def _sweep(self) -> None:
        self._waiting = {token: f for token, f in self._waiting.items() if not f.done()}
        self._sweep_at = max(_FIRST_SWEEP, 2 * len(self._waiting))

    async def _on_ack(self, msg: Msg) -> None:
        future = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            future.set_exception(nats.js.errors.NoStreamResponseError())
            return
        try:
            reply = self._decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            future.set_exception(nats.js.errors.Error(f"unreadable publish ack: {exc}"))
            return
        if reply.error is not None:
            try:  # nats-py's error classes by code (503, 500, 404, 400, else APIError)
                nats.js.errors.APIError.from_error(reply.error)
            except Exception as exc:
                future.set_exception(exc)
            return
        future.set_result(Ack(reply.stream, reply.seq, reply.duplicate))
