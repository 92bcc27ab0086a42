"""Claiming the command a notification names, without spending the message's deliveries.

JetStream counts every delivery of a message, a nak'd one too, against the consumer's
``max_deliver``, and the worker parks a message in ``NOETL_DLQ`` on its last delivery. So a
claim that gets no verdict is never answered with a nak; the worker keeps the message
(``in_progress`` every heartbeat) and asks again:

* **the control-api is unreachable** (connection errors, timeouts, 408/425/429, 5xx, or a 401 /
  403 that says this worker's credential is refused): the message keeps its run slot, and the
  claim is retried with capped exponential backoff (``Retry-After`` honoured) for as long as
  the outage lasts. A worker that cannot reach the API fetches nothing more.
* **another worker holds the lease** (429 ``lease_held``, e.g. the duplicate notification of
  a command handed to its owner by eager dispatch): the message is *parked* — it gives its
  run slot back, waits until the lease ends (``Retry-After``) and claims again, taking a slot
  first. The owner finishing makes that claim a 409 (acked); the owner dying lets it take the
  command over as the next attempt.

Verdicts settle the message: 200 runs the command, 409 (finished, cancelled) and 404
(unknown) ack it, and a claim the API refuses as invalid (another 4xx) is poison: dead-lettered.
A stop request ends every wait: the message is handed back for another worker.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import structlog
from nats.aio.msg import Msg
from noetl_common import ApiError, ClaimReply, CommandNotification, wait_or_stop

from ._api import ControlPlane
from ._config import WorkerConfig
from ._dead_letter import DeadLetters
from ._metrics import count_command
from ._reporting import retryable
from ._running_command import keep_in_progress

#: Wait before the first retry of a claim the API did not answer; doubles up to the maximum.
CLAIM_RETRY_INITIAL_SECONDS = 0.2
CLAIM_RETRY_MAX_SECONDS = 15.0
#: Shortest wait for a held lease (a Retry-After of 0 must not make a hot loop).
LEASE_WAIT_MIN_SECONDS = 0.05
#: Redelivery delay of a message handed back at shutdown (every nak carries a delay).
RELEASE_NAK_DELAY_SECONDS = 1.0

Log = structlog.typing.FilteringBoundLogger


class Slots:
    """The worker's run slots: the fetch loop takes one per message it pulls, a parked
    message gives its slot back while it waits, and takes one again before it claims.

    A slot a parked message waits for goes to it, not to the next fetch (which would
    otherwise take every free slot again before the waiting message got its turn)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._free = total
        self._waiting = 0
        self._changed = asyncio.Event()

    @property
    def free(self) -> int:
        return self._free

    @property
    def fetchable(self) -> int:
        """Free slots no parked message is waiting for: what the fetch loop may take."""
        return self._free - self._waiting

    def take(self, count: int) -> None:
        """Take ``count`` free slots now (the caller checked ``fetchable``)."""
        assert 0 <= count <= self._free
        self._free -= count

    def give(self, count: int = 1) -> None:
        self._free += count
        self._changed.set()

    async def changed(self) -> None:
        """Return after the next ``give``."""
        self._changed.clear()
        await self._changed.wait()

    async def acquire(self) -> None:
        """Take one slot, waiting for it (ahead of the fetch loop)."""
        self._waiting += 1
        try:
            while self._free <= 0:
                await self.changed()
        finally:
            self._waiting -= 1
        self._free -= 1


class Slot:
    """The run slot of one message's handler: held, or given back while the message is parked."""

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            self._slots.give()

    async def acquire(self) -> None:
        if not self.held:
            await self._slots.acquire()
            self.held = True


def _extra(exc: BaseException) -> dict[str, Any]:
    """The ``extra`` of an error reply (empty when there is none)."""
    extra = exc.body.extra if isinstance(exc, ApiError) and exc.body is not None else None
    return extra if isinstance(extra, dict) else {}


def lease_held(exc: BaseException) -> bool:
    """A 429 that says another claim's lease is live (not the API shedding load)."""
    return (
        isinstance(exc, ApiError)
        and exc.status_code == 429
        and exc.body is not None
        and exc.body.error == "lease_held"
    )


def refused_worker(exc: BaseException) -> bool:
    """A 401 or a 403 that refuses this worker's credential rather than the command: the
    message is not at fault, so it is not dead-lettered (a 403 naming the command's pool is
    a message on the wrong pool's subject)."""
    if not isinstance(exc, ApiError) or exc.status_code not in (401, 403):
        return False
    return exc.status_code == 401 or "pool" not in _extra(exc)


class Claimer:
    """Claims for one worker; ``stop`` ends the waits (the worker's stop request)."""

    def __init__(self, config: WorkerConfig, dead_letters: DeadLetters, stop: asyncio.Event) -> None:
        self._config = config
        self._dead_letters = dead_letters
        self._stop = stop
        #: messages waiting for another worker's lease to end (they hold no run slot)
        self.parked = 0

    async def claim(
        self, msg: Msg, note: CommandNotification, api: ControlPlane, slot: Slot, log: Log
    ) -> ClaimReply | None:
        """The command's claim, or None when the message was settled here: acked, dead-lettered,
        or handed back because the worker is stopping."""
        keepalive = asyncio.create_task(keep_in_progress(msg, self._config.heartbeat_interval, log))
        backoff = CLAIM_RETRY_INITIAL_SECONDS
        try:
            while True:
                try:
                    return await api.claim_command(note.event_id, self._config.worker_id)
                except Exception as exc:
                    if lease_held(exc):
                        if not await self._park(exc, slot, log):
                            break
                    elif retryable(exc) or refused_worker(exc):
                        asked = _retry_after(exc)
                        # jittered: workers that lost the API together do not come back together
                        wait = asked if asked is not None else backoff * (1 + random.random() / 4)
                        backoff = min(backoff * 2, CLAIM_RETRY_MAX_SECONDS)
                        count_command(self._config.pool, "claim_retried")
                        log.warning(
                            "claim_unanswered", outcome="held", error=str(exc) or repr(exc), retry_in=wait
                        )
                        if await wait_or_stop(self._stop, wait):
                            break
                    else:
                        await self._verdict(msg, note, exc, log)
                        return None
        finally:
            keepalive.cancel()
            await asyncio.gather(keepalive, return_exceptions=True)
        await self._release(msg, log)
        return None

    async def _park(self, exc: BaseException, slot: Slot, log: Log) -> bool:
        """Wait for the lease to end without a run slot, then take one; False when stopping."""
        wait = max(LEASE_WAIT_MIN_SECONDS, _retry_after(exc) or self._config.heartbeat_interval)
        count_command(self._config.pool, "lease_held")
        log.info("claim_lease_held", outcome="parked", holder=_extra(exc).get("worker_id"), retry_in=wait)
        slot.release()
        self.parked += 1
        try:
            if await wait_or_stop(self._stop, wait):
                return False
            acquiring = asyncio.ensure_future(slot.acquire())
            stopping = asyncio.ensure_future(self._stop.wait())
            try:
                await asyncio.wait({acquiring, stopping}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopping.cancel()
                if not acquiring.done():
                    acquiring.cancel()
                await asyncio.gather(acquiring, stopping, return_exceptions=True)
            return slot.held and not self._stop.is_set()
        finally:
            self.parked -= 1

    async def _verdict(self, msg: Msg, note: CommandNotification, exc: Exception, log: Log) -> None:
        """Settle a message whose claim was answered for good."""
        status = exc.status_code if isinstance(exc, ApiError) else None
        if status == 409:
            log.info("claim_conflict", outcome="dropped", reason="finished_or_cancelled")
            await msg.ack()
            count_command(self._config.pool, "conflict")
        elif status == 404:
            log.warning("claim_not_found", outcome="dropped")
            await msg.ack()
            count_command(self._config.pool, "not_found")
        else:
            # the API refuses the command this message names (a 4xx no retry gets past): poison
            count_command(self._config.pool, "rejected")
            await self._dead_letters.park(
                msg, f"claim refused: {exc}", "refused", (note.event_id, note.server_url), log
            )

    async def _release(self, msg: Msg, log: Log) -> None:
        """Stopping: hand the message to another worker now rather than after the ack wait."""
        try:
            await msg.nak(delay=RELEASE_NAK_DELAY_SECONDS)
        except Exception as exc:
            log.warning("command_release_failed", error=repr(exc))
        count_command(self._config.pool, "released")
        log.info("command_released", subject=msg.subject, reason="stopping_before_claim")


def _retry_after(exc: BaseException) -> float | None:
    return exc.retry_after if isinstance(exc, ApiError) else None
