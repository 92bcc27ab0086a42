"""The worker's lifecycle and fetch loop: pull command notifications, claim, hand each to a
:class:`RunningCommand`.

Shape (STYLE.md, after temporalio's worker): one poller that fetches only as many
messages as there are free run slots, a bounded set of in-flight command tasks, and a
graceful stop — stop fetching, let in-flight commands finish within a grace period,
then nak what is left so another worker takes it over. Beside it: claiming without
spending deliveries (``_claiming``), presence (``_presence``), reporting (``_reporting``),
dead-lettering (``_dead_letter``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections import OrderedDict
from typing import Any

import msgspec
import nats.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from noetl_common import (
    COMMANDS_STREAM,
    DLQ_STREAM,
    ClaimReply,
    CommandNotification,
    NatsLink,
    ensure_consumer,
    ensure_streams,
    pool_consumer_config,
)

from ._api import ApiFor, ControlPlane
from ._claiming import RELEASE_NAK_DELAY_SECONDS, Claimer, Slot, Slots
from ._config import WorkerConfig
from ._dead_letter import DeadLetters, event_id_of
from ._metrics import IN_FLIGHT, count_command
from ._pipeline import PipelineRunner
from ._presence import Presence
from ._reporting import Reporter
from ._running_command import Delivery, RunningCommand
from .tools import ToolRegistry, default_registry

#: Longest wait between two attempts to connect to NATS at start.
NATS_MAX_BACKOFF_SECONDS = 10.0
#: Eager commands remembered as finished here, for their notifications (oldest forgotten
#: first; a forgotten one is claimed as before and meets 409).
FINISHED_HERE_MAX = 4096


def _delivered(msg: Msg) -> int:
    """JetStream's delivery count of ``msg`` (1 on the first delivery)."""
    try:
        return int(msg.metadata.num_delivered or 1)
    except Exception:
        return 1


class Worker:
    """A pool worker: one JetStream pull consumer, up to ``max_concurrent`` commands at once."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        api_for: ApiFor,
        registry: ToolRegistry | None = None,
        runner: PipelineRunner | None = None,
        logger: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.config = config
        self._api_for = api_for
        self.runner = runner or PipelineRunner(
            registry or default_registry(config), limits=config.template_limits
        )
        log: structlog.typing.FilteringBoundLogger = logger or structlog.get_logger(
            service="noetl-system-worker"
        )
        self._log = log.bind(worker_id=config.worker_id, pool=config.pool)
        self._nats = NatsLink(
            config.nats_url,
            user=config.nats_user,
            password=config.nats_password,
            name=f"noetl-system-worker:{config.worker_id}",
            log=self._log,
            max_backoff=NATS_MAX_BACKOFF_SECONDS,
        )
        self._presence = Presence(config, api_for, self._log, in_flight=lambda: len(self._in_flight))
        self._reporter = Reporter(config, self._log)
        self._stop = asyncio.Event()  # set when the stop request arrives: ends every wait for a claim
        self._dead_letters = DeadLetters(config, api_for, self._log, self._stop)
        self._claimer = Claimer(config, self._dead_letters, self._stop)
        self._slots = Slots(config.max_concurrent)
        self._in_flight: set[asyncio.Task[None]] = set()
        #: eager commands running here, by claim key: their notification is adopted, not claimed
        self._eager: dict[int, Delivery] = {}
        #: eager commands finished here (terminal event accepted), oldest first: a notification
        #: of one fetched afterwards is acked without a claim, which could only answer 409
        self._finished_here: OrderedDict[int, None] = OrderedDict()
        self._running = False

    # -- health --------------------------------------------------------------------------
    def ready(self) -> bool:
        """True only while connected to NATS and the fetch loop is running."""
        return self._nats.connected and self._running

    def details(self) -> dict[str, Any]:
        """Extra fields of ``/readyz``."""
        return {
            "worker_id": self.config.worker_id,
            "pool": self.config.pool,
            "nats_connected": self._nats.connected,
            "loop_running": self._running,
            "in_flight": len(self._in_flight),
            "parked": self._claimer.parked,
            "max_concurrent": self.config.max_concurrent,
        }

    @property
    def in_flight(self) -> int:
        """Commands being handled right now."""
        return len(self._in_flight)

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully and return."""
        nc = await self._nats.connect(stop)
        if nc is None:
            return
        presence: asyncio.Future[tuple[None, None]] | None = None
        try:
            js = self._dead_letters.js = nc.jetstream()
            # the streams it uses; a stream it finds with unsafe settings stops the start (exit 2)
            await ensure_streams(js, streams=(COMMANDS_STREAM, DLQ_STREAM), log=self._log)
            consumer = dataclasses.replace(
                pool_consumer_config(
                    self.config.pool,
                    ack_wait_seconds=self.config.ack_wait_seconds,
                    max_deliver=self.config.max_deliver,
                ),
                durable_name=self.config.consumer,
                filter_subject=self.config.filter_subject,
            )
            await ensure_consumer(js, self.config.stream, consumer)
            sub = await js.pull_subscribe_bind(durable=self.config.consumer, stream=self.config.stream)
            presence = asyncio.gather(self._presence.keep_registered(), self._presence.poll_lag(sub))
            # claim nothing (and so mint no event id) before the register reply named our node id
            await self._presence.first_registration()
            self._running = True
            self._log.info(
                "worker_started",
                consumer=self.config.consumer,
                filter_subject=self.config.filter_subject,
                max_concurrent=self.config.max_concurrent,
            )
            try:
                await self._fetch_loop(sub, stop)
            finally:
                self._running = False
                self._stop.set()  # messages still waiting for a claim are handed back at once
                await self._drain_in_flight()
                await self._reporter.aclose()
        finally:
            if presence is not None:
                presence.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await presence
                await self._presence.deregister()
            await self._nats.close(drain=False)
            self._log.info("worker_stopped")

    async def _fetch_loop(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                free = self._slots.fetchable
                if free <= 0:
                    # Fetch nothing while full: un-fetched messages stay available to other workers.
                    slot = asyncio.ensure_future(self._slots.changed())
                    await asyncio.wait({slot, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                    slot.cancel()
                    continue
                self._slots.take(free)
                try:
                    messages = await sub.fetch(batch=free, timeout=self.config.fetch_timeout_seconds)
                except (TimeoutError, nats.errors.TimeoutError):  # nats-py raises either
                    messages = []
                except Exception as exc:
                    self._slots.give(free)
                    self._log.warning("fetch_failed", error=repr(exc))
                    await asyncio.wait({stop_wait}, timeout=1.0)
                    continue
                self._slots.give(free - len(messages))
                for msg in messages:
                    if stop.is_set():
                        # Pulled while stopping: give it straight back for another worker.
                        self._slots.give()
                        with contextlib.suppress(Exception):
                            await msg.nak(delay=RELEASE_NAK_DELAY_SECONDS)
                        continue
                    self._spawn(msg, Slot(self._slots))
        finally:
            stop_wait.cancel()

    def _spawn(self, msg: Msg, slot: Slot) -> None:
        task = asyncio.create_task(self._handle(msg, slot))
        self._in_flight.add(task)
        IN_FLIGHT.labels(self.config.pool).inc()
        task.add_done_callback(lambda done: self._finished(done, slot))

    def _finished(self, task: asyncio.Task[None], slot: Slot) -> None:
        self._in_flight.discard(task)
        IN_FLIGHT.labels(self.config.pool).dec()
        slot.release()
        if not task.cancelled() and task.exception() is not None:
            self._log.error("command_handler_crashed", error=repr(task.exception()))

    async def _drain_in_flight(self) -> None:
        """Let in-flight commands finish within the grace period; release the rest."""
        tasks = set(self._in_flight)
        if not tasks:
            return
        self._log.info(
            "worker_draining", in_flight=len(tasks), grace_seconds=self.config.shutdown_grace_seconds
        )
        _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace_seconds)
        for task in pending:
            task.cancel()  # each handler naks its own message when cancelled
        if pending:
            self._log.warning("worker_grace_expired", releasing=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    # -- one message -----------------------------------------------------------------------
    async def _handle(self, msg: Msg, slot: Slot) -> None:
        delivery = Delivery(msg)
        try:
            await self._handle_message(msg, delivery, slot)
        except asyncio.CancelledError:
            if delivery.settled:
                raise  # acked already (an eager command ran after it): nothing to hand back
            # Shutdown past the grace period: hand the command to another worker now
            # rather than after the ack wait. Its lease expiry lets the next claim in.
            try:
                await msg.nak(delay=RELEASE_NAK_DELAY_SECONDS)
            except Exception as exc:
                self._log.warning("command_release_failed", error=repr(exc))
            count_command(self.config.pool, "released")
            self._log.info("command_released", subject=msg.subject)
            raise

    async def _handle_message(self, msg: Msg, delivery: Delivery, slot: Slot) -> None:
        try:
            note = msgspec.json.decode(msg.data, type=CommandNotification)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            count_command(self.config.pool, "undecodable")
            await self._dead_letters.park(
                msg, f"undecodable command notification: {exc}", "undecodable", event_id_of(msg.data)
            )
            return
        log = self._log.bind(execution_id=note.execution_id, event_id=note.event_id, step=note.step)
        running = self._eager.get(note.event_id)
        if note.event_id in self._finished_here or (running is not None and running.finished):
            # an eager command this worker finished (its terminal event accepted) before the
            # notification came: a claim could only answer 409, so ack and drop it without one
            self._finished_here.pop(note.event_id, None)
            if running is not None:
                running.msg = msg  # taken: not remembered when its run ends
            await msg.ack()
            count_command(self.config.pool, "finished_here")
            log.debug("eager_notification_dropped", reason="finished_here")
            return
        delivered = _delivered(msg)
        if delivered >= self.config.max_deliver:
            # JetStream delivers it no more after this one: were it run (and crashed the worker
            # again) or nak'd, the command would stay open forever. Fail it and park the message.
            reason = (
                f"command notification delivered {delivered} times (max_deliver"
                f" {self.config.max_deliver}) without the command finishing"
            )
            await self._dead_letters.park(msg, reason, "max_deliver", (note.event_id, note.server_url), log)
            return
        if running is not None and running.msg is None and not running.settled:
            running.msg = msg  # ours already (eager): acked when its terminal event is accepted
            log.debug("eager_notification_adopted")
            return
        api = self._api_for(note.server_url)
        claim = await self._claimer.claim(msg, note, api, slot, log)
        if claim is None:
            return  # settled already: acked, dead-lettered, or handed back at stop
        command_log = log.bind(attempt=claim.attempt, command_id=claim.command_id)
        after = await self._command(claim, api, delivery, command_log).run()
        while after is not None:  # eager dispatch: the next command, in this slot
            after = await self._run_eager(after, api)

    def _command(
        self,
        claim: ClaimReply,
        api: ControlPlane,
        delivery: Delivery,
        log: structlog.typing.FilteringBoundLogger,
    ) -> RunningCommand:
        return RunningCommand(
            claim,
            api,
            delivery,
            config=self.config,
            runner=self.runner,
            reporter=self._reporter,
            log=log,
            accepting=lambda: self._running,
        )

    async def _run_eager(self, claim: ClaimReply, api: ControlPlane) -> ClaimReply | None:
        """Run a command claimed for us in the reply to a terminal event. It has no NATS
        message of its own here unless its notification is fetched (and adopted) meanwhile;
        if this worker dies, the lease expires and that notification gets it claimed again."""
        delivery = Delivery(None)
        self._eager[claim.event_id] = delivery
        log = self._log.bind(
            execution_id=claim.execution_id,
            event_id=claim.event_id,
            step=claim.step,
            attempt=claim.attempt,
            command_id=claim.command_id,
            eager=True,
        )
        try:
            return await self._command(claim, api, delivery, log).run()
        finally:
            self._eager.pop(claim.event_id, None)
            if delivery.finished and delivery.msg is None:
                # its notification is still to come (or was taken by another worker)
                self._finished_here[claim.event_id] = None
                while len(self._finished_here) > FINISHED_HERE_MAX:
                    self._finished_here.popitem(last=False)
            if delivery.msg is not None and not delivery.settled:
                # adopted but not reported (cancelled): redelivered, claimed after the lease
                with contextlib.suppress(Exception):
                    await delivery.nak(RELEASE_NAK_DELAY_SECONDS)
