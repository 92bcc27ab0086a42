"""The worker loop: pull command notifications, claim, run the pipeline, report, ack.

Shape (STYLE.md, after temporalio's worker): one poller that fetches only as many
messages as there are free slots, a bounded set of in-flight command tasks, and a
graceful stop — stop fetching, let in-flight commands finish within a grace period,
then nak what is left so another worker takes it over.

A message is acked only after its terminal event was accepted by the control-api
(ARCHITECTURE §5): until then ``msg.in_progress()`` keeps JetStream from redelivering
it and ``command.heartbeat`` events renew the claim's lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import socket
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import httpx
import msgspec
import nats
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from noetl_common import (
    ApiError,
    ClaimReply,
    CommandNotification,
    CommandSpec,
    EagerRequest,
    Event,
    EventsReply,
    WorkerHeartbeat,
    WorkerRegistration,
    dlq_subject,
    ensure_consumer,
    ensure_streams,
    pool_consumer_config,
    utc_now_iso,
)
from noetl_common.arrow_limits import check_table
from noetl_common.results import encode_result

from ._api import ControlPlane
from ._batching import TerminalBatcher
from ._config import WorkerConfig
from ._metrics import COMMANDS, CONSUMER_ACK_PENDING, CONSUMER_PENDING, EVENT_POST_RETRIES, IN_FLIGHT
from ._pipeline import PipelineRunner, StepOutcome
from ._runtime import ToolRuntime, current_runtime
from .tools import CommandScope, ToolRegistry, current_command, default_registry

#: Redelivery delay after a retryable claim failure that named no Retry-After.
DEFAULT_NAK_DELAY_SECONDS = 2.0
#: How long a starting worker waits for its first registration (and leased node id) before fetching.
REGISTRATION_WAIT_SECONDS = 10.0
#: Redelivery delay of a message handed back at shutdown (every nak carries a delay: no hot loop).
RELEASE_NAK_DELAY_SECONDS = 1.0
#: How long a dead-lettering worker keeps trying to fail the command through the API.
DEAD_LETTER_FAIL_TIMEOUT_SECONDS = 60.0
#: Headers of a message parked in NOETL_DLQ (the projector uses the same names).
HEADER_ORIGINAL_SUBJECT = "Noetl-Original-Subject"
HEADER_ERROR = "Noetl-Error"
HEADER_REASON = "Noetl-Reason"
#: A tool still running after this long has its command.started posted on its own; a quicker
#: one sends it in its terminal batch (the claim's lease covers the command meanwhile).
STARTED_POST_DELAY_SECONDS = 0.05
#: Backoff of a retried event POST: starts here, doubles, capped at the maximum.
POST_RETRY_INITIAL_SECONDS = 0.2
POST_RETRY_MAX_SECONDS = 10.0
#: Claim statuses that mean "not now, try later" (besides any 5xx).
_RETRY_LATER = frozenset({408, 425, 429})

ApiFor = Callable[[str | None], ControlPlane]


def _package_version() -> str | None:
    try:
        return version("noetl-system-worker")
    except PackageNotFoundError:
        return None


def _jsonable(value: Any) -> Any:
    """Task results are arbitrary Python; events must be JSON. Unknown types become str."""
    return msgspec.json.decode(msgspec.json.encode(value, enc_hook=str))


def _delivered(msg: Msg) -> int:
    """JetStream's delivery count of ``msg`` (1 on the first delivery)."""
    try:
        return int(msg.metadata.num_delivered or 1)
    except Exception:
        return 1


def _event_id_of(data: bytes) -> tuple[int, str | None] | None:
    """The claim key of a notification that did not decode as a whole, when it still names one."""
    try:
        raw = msgspec.json.decode(data)
    except Exception:
        return None
    if not isinstance(raw, dict):
        return None
    event_id = raw.get("event_id")
    if isinstance(event_id, str) and event_id.isdigit():
        event_id = int(event_id)
    if isinstance(event_id, bool) or not isinstance(event_id, int) or not 0 < event_id < 2**63:
        return None
    return event_id, None  # its server_url is not trusted: the default API is asked


class StaleAttemptError(Exception):
    """The control-api answered 409: another attempt owns this command now."""


class EventRejectedError(Exception):
    """The control-api refused an event for good (a 4xx other than 409)."""


class _Delivery:
    """The NATS message behind a running command, settled (acked or nak'd) once.

    An eager command (handed over in the reply to the previous command's terminal event)
    starts with no message; its own notification, when this worker fetches it meanwhile,
    is attached here so it is kept in progress and acked after the terminal event, like
    any other (ack-after-terminal holds for it too).
    """

    def __init__(self, msg: Msg | None) -> None:
        self.msg = msg
        self.settled = False

    async def in_progress(self) -> None:
        if self.msg is not None and not self.settled:
            await self.msg.in_progress()

    async def ack(self, *, sync: bool = False) -> None:
        self.settled = True
        if self.msg is not None:
            await (self.msg.ack_sync() if sync else self.msg.ack())

    async def nak(self, delay: float) -> None:
        self.settled = True
        if self.msg is not None:
            await self.msg.nak(delay=delay)


def _stop_on_stale(task: asyncio.Task[Any], lease_lost: asyncio.Event) -> None:
    """A ``command.started`` refused as stale: abandon the pipeline it runs beside."""
    if not task.cancelled() and isinstance(task.exception(), StaleAttemptError):
        lease_lost.set()


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, ApiError):
        return exc.status_code in _RETRY_LATER or exc.status_code >= 500
    return isinstance(exc, httpx.TransportError | OSError | asyncio.TimeoutError)


class Worker:
    """A pool worker: one JetStream pull consumer, up to ``max_concurrent`` commands at once."""

    def __init__(
        self,
        config: WorkerConfig,
        *,
        api_for: ApiFor,
        registry: ToolRegistry | None = None,
        runner: PipelineRunner | None = None,
        logger: Any = None,
    ) -> None:
        self.config = config
        self._api_for = api_for
        self.runner = runner or PipelineRunner(
            registry or default_registry(config), limits=config.template_limits
        )
        log = logger or structlog.get_logger(service="noetl-system-worker")
        self._log = log.bind(worker_id=config.worker_id, pool=config.pool)
        self._in_flight: set[asyncio.Task[None]] = set()
        self._slot_freed = asyncio.Event()
        #: eager commands running here, by claim key: their notification is adopted, not claimed
        self._eager: dict[int, _Delivery] = {}
        self._batchers: dict[int, TerminalBatcher] = {}  # by id() of the client: clients live on
        self._connected = False
        self._running = False
        self._js: JetStreamContext | None = None
        # set after the first registration attempt: ids are minted from the leased node id
        self._first_registration = asyncio.Event()

    def _commands(self, outcome: str) -> Any:
        return COMMANDS.labels(self.config.pool, outcome)

    # -- health --------------------------------------------------------------------------
    def ready(self) -> bool:
        """True only while connected to NATS and the fetch loop is running."""
        return self._connected and self._running

    def details(self) -> dict[str, Any]:
        """Extra fields of ``/readyz``."""
        return {
            "worker_id": self.config.worker_id,
            "pool": self.config.pool,
            "nats_connected": self._connected,
            "loop_running": self._running,
            "in_flight": len(self._in_flight),
            "max_concurrent": self.config.max_concurrent,
        }

    @property
    def in_flight(self) -> int:
        """Commands being handled right now."""
        return len(self._in_flight)

    # -- lifecycle -----------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then shut down gracefully and return."""
        nc = await self._connect(stop)
        if nc is None:
            return
        presence: asyncio.Future[Any] | None = None
        try:
            js = self._js = nc.jetstream()
            await ensure_streams(js)
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
            presence = asyncio.gather(self._presence(), self._poll_lag(sub))
            # claim nothing (and so mint no event id) before the register reply named our node
            # id; bounded, so an API that is down does not keep the worker from starting
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._first_registration.wait(), REGISTRATION_WAIT_SECONDS)
            self._running = True
            self._log.info(
                "worker started",
                consumer=self.config.consumer,
                filter_subject=self.config.filter_subject,
                max_concurrent=self.config.max_concurrent,
            )
            try:
                await self._fetch_loop(sub, stop)
            finally:
                self._running = False
                await self._drain_in_flight()
                for batcher in self._batchers.values():
                    await batcher.aclose()
        finally:
            if presence is not None:
                presence.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await presence
                await self._deregister()
            # flush + close rather than drain: drain waits on the pull subscription's
            # internal queue, which fetch never marks done, for the whole drain timeout.
            with contextlib.suppress(Exception):
                await nc.flush(timeout=2)
            with contextlib.suppress(Exception):
                await nc.close()
            self._connected = False
            self._log.info("worker stopped")

    async def _connect(self, stop: asyncio.Event) -> NatsClient | None:
        """Connect to NATS, retrying with backoff until connected or asked to stop."""

        async def disconnected() -> None:
            self._connected = False
            self._log.warning("nats disconnected")

        async def reconnected() -> None:
            self._connected = True
            self._log.info("nats reconnected")

        async def errored(exc: Exception) -> None:
            self._log.warning("nats error", error=str(exc))

        servers = [s.strip() for s in self.config.nats_url.split(",") if s.strip()]
        delay = 0.5
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                # With unlimited reconnects nats-py retries even the first connect forever,
                # so race it against stop: a SIGTERM before NATS is reachable still exits.
                connect = asyncio.ensure_future(
                    nats.connect(
                        servers=servers,
                        user=self.config.nats_user,
                        password=self.config.nats_password,
                        name=f"noetl-system-worker:{self.config.worker_id}",
                        max_reconnect_attempts=-1,
                        reconnect_time_wait=1,
                        connect_timeout=5,
                        disconnected_cb=disconnected,
                        reconnected_cb=reconnected,
                        error_cb=errored,
                    )
                )
                await asyncio.wait({connect, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                if not connect.done():
                    connect.cancel()
                    await asyncio.gather(connect, return_exceptions=True)
                    return None
                try:
                    nc = connect.result()
                except Exception as exc:
                    self._log.warning("nats connect failed; retrying", error=str(exc), retry_in=delay)
                    await asyncio.wait({stop_wait}, timeout=delay)
                    delay = min(delay * 2, 10.0)
                    continue
                self._connected = True
                return nc
            return None
        finally:
            stop_wait.cancel()

    async def _fetch_loop(self, sub: JetStreamContext.PullSubscription, stop: asyncio.Event) -> None:
        stop_wait = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                free = self.config.max_concurrent - len(self._in_flight)
                if free <= 0:
                    # Fetch nothing while full: un-fetched messages stay available to other workers.
                    self._slot_freed.clear()
                    slot = asyncio.ensure_future(self._slot_freed.wait())
                    await asyncio.wait({slot, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                    slot.cancel()
                    continue
                try:
                    messages = await sub.fetch(batch=free, timeout=self.config.fetch_timeout_seconds)
                except nats.errors.TimeoutError:
                    continue
                except Exception as exc:
                    self._log.warning("fetch failed", error=repr(exc))
                    await asyncio.wait({stop_wait}, timeout=1.0)
                    continue
                for msg in messages:
                    if stop.is_set():
                        # Pulled while stopping: give it straight back for another worker.
                        with contextlib.suppress(Exception):
                            await msg.nak(delay=RELEASE_NAK_DELAY_SECONDS)
                        continue
                    self._spawn(msg)
        finally:
            stop_wait.cancel()

    def _spawn(self, msg: Msg) -> None:
        task = asyncio.create_task(self._handle(msg))
        self._in_flight.add(task)
        IN_FLIGHT.labels(self.config.pool).inc()
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        IN_FLIGHT.labels(self.config.pool).dec()
        self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            self._log.error("command handler crashed", error=repr(task.exception()))

    async def _drain_in_flight(self) -> None:
        """Let in-flight commands finish within the grace period; release the rest."""
        tasks = set(self._in_flight)
        if not tasks:
            return
        self._log.info(
            "waiting for in-flight commands", count=len(tasks), grace=self.config.shutdown_grace_seconds
        )
        _, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_grace_seconds)
        for task in pending:
            task.cancel()  # each handler naks its own message when cancelled
        if pending:
            self._log.warning("grace period over; releasing commands", count=len(pending))
            await asyncio.gather(*pending, return_exceptions=True)

    # -- presence --------------------------------------------------------------------------
    async def _presence(self) -> None:
        """Register, then heartbeat every interval; re-register when the API forgot us."""
        api = self._api_for(None)
        registered = False
        while True:
            try:
                if not registered:
                    reply = await api.register_worker(
                        WorkerRegistration(
                            worker_id=self.config.worker_id,
                            pool=self.config.pool,
                            capacity=self.config.max_concurrent,
                            hostname=socket.gethostname(),
                            version=_package_version(),
                            meta={
                                "consumer": self.config.consumer,
                                "filter_subject": self.config.filter_subject,
                            },
                        )
                    )
                    registered = True
                    self._adopt_node(reply)
                    self._log.info("worker registered", node_id=self.config.snowflake.node_id)
                else:
                    await api.heartbeat_worker(
                        WorkerHeartbeat(
                            worker_id=self.config.worker_id,
                            pool=self.config.pool,
                            in_flight=len(self._in_flight),
                        )
                    )
            except ApiError as exc:
                if exc.status_code == 404:
                    registered = False
                self._log.warning("worker registration/heartbeat failed", error=str(exc))
            except Exception as exc:
                self._log.warning("worker registration/heartbeat failed", error=repr(exc))
            self._first_registration.set()
            await asyncio.sleep(self.config.heartbeat_interval)

    def _adopt_node(self, reply: dict[str, Any] | None) -> None:
        """Mint ids with the node id the control-api leased us, unless the environment named one."""
        node = (reply or {}).get("node_id")
        if self.config.snowflake_node_explicit or isinstance(node, bool) or not isinstance(node, int):
            return
        if node != self.config.snowflake.node_id:
            self._log.info("snowflake node id leased", node_id=node, was=self.config.snowflake.node_id)
            self.config.snowflake.set_node(node)

    async def _poll_lag(self, sub: JetStreamContext.PullSubscription) -> None:
        """Publish the consumer's backlog as gauges (an autoscaling and alerting signal)."""
        while True:
            try:
                info = await sub.consumer_info()
                CONSUMER_PENDING.labels(self.config.pool).set(info.num_pending or 0)
                CONSUMER_ACK_PENDING.labels(self.config.pool).set(info.num_ack_pending or 0)
            except Exception as exc:
                self._log.debug("consumer info failed", error=repr(exc))
            await asyncio.sleep(self.config.lag_poll_interval)

    async def _deregister(self) -> None:
        try:
            await asyncio.wait_for(self._api_for(None).deregister_worker(self.config.worker_id), 5.0)
        except Exception as exc:
            self._log.warning("deregister failed", error=repr(exc))

    # -- one command -----------------------------------------------------------------------
    async def _handle(self, msg: Msg) -> None:
        delivery = _Delivery(msg)
        try:
            await self._handle_message(msg, delivery)
        except asyncio.CancelledError:
            if delivery.settled:
                raise  # acked already (an eager command ran after it): nothing to hand back
            # Shutdown past the grace period: hand the command to another worker now
            # rather than after the ack wait. Its lease expiry lets the next claim in.
            try:
                await msg.nak(delay=RELEASE_NAK_DELAY_SECONDS)
            except Exception as exc:
                self._log.warning("nak of a released command failed", error=repr(exc))
            self._commands("released").inc()
            self._log.info("command released for redelivery", subject=msg.subject)
            raise

    async def _handle_message(self, msg: Msg, delivery: _Delivery) -> None:
        try:
            note = msgspec.json.decode(msg.data, type=CommandNotification)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._commands("undecodable").inc()
            await self._dead_letter(
                msg, f"undecodable command notification: {exc}", "undecodable", _event_id_of(msg.data)
            )
            return
        log = self._log.bind(execution_id=note.execution_id, event_id=note.event_id, step=note.step)
        delivered = _delivered(msg)
        if delivered >= self.config.max_deliver:
            # JetStream delivers it no more after this one: were it run (and crashed the worker
            # again) or nak'd, the command would stay open forever. Fail it and park the message.
            reason = (
                f"command notification delivered {delivered} times (max_deliver"
                f" {self.config.max_deliver}) without the command finishing"
            )
            await self._dead_letter(msg, reason, "max_deliver", (note.event_id, note.server_url), log)
            return
        running = self._eager.get(note.event_id)
        if running is not None and running.msg is None and not running.settled:
            running.msg = msg  # ours already (eager): acked when its terminal event is accepted
            log.debug("notification of a running eager command adopted")
            return
        api = self._api_for(note.server_url)
        try:
            claim = await api.claim_command(note.event_id, self.config.worker_id)
        except Exception as exc:
            await self._claim_failed(msg, exc, log)
            return
        after = await self._run_claimed(
            delivery, claim, api, log.bind(attempt=claim.attempt, command_id=claim.command_id)
        )
        while after is not None:  # eager dispatch: the next command, in this slot
            after = await self._run_eager(after, api)

    async def _run_eager(self, claim: ClaimReply, api: ControlPlane) -> ClaimReply | None:
        """Run a command claimed for us in the reply to a terminal event. It has no NATS
        message of its own here unless its notification is fetched (and adopted) meanwhile;
        if this worker dies, the lease expires and that notification gets it claimed again."""
        delivery = _Delivery(None)
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
            return await self._run_claimed(delivery, claim, api, log)
        finally:
            self._eager.pop(claim.event_id, None)
            if delivery.msg is not None and not delivery.settled:
                # adopted but not reported (cancelled): redelivered, claimed after the lease
                with contextlib.suppress(Exception):
                    await delivery.nak(RELEASE_NAK_DELAY_SECONDS)

    async def _dead_letter(
        self,
        msg: Msg,
        error: str,
        reason: str,
        command: tuple[int, str | None] | None,
        log: Any = None,
    ) -> None:
        """Fail the command through the API, copy ``msg`` to NOETL_DLQ, terminate it.

        ``command`` is ``(event_id, server_url)`` when known. A command that had finished
        meanwhile is just acked: nothing is lost, nothing to park.
        """
        log = log or self._log
        failed = "unknown command"
        if command is not None:
            keepalive = asyncio.create_task(self._keep_in_progress(msg, log))
            try:
                failed = await self._fail_command(command[0], command[1], error, log)
            finally:
                keepalive.cancel()
                await asyncio.gather(keepalive, return_exceptions=True)
            if failed == "finished":
                log.info("dead-letter candidate had finished meanwhile; acked", reason=reason)
                await msg.ack()
                self._commands("conflict").inc()
                return
        headers = {
            HEADER_ORIGINAL_SUBJECT: msg.subject,
            HEADER_ERROR: " ".join(error.split())[:1000],
            HEADER_REASON: reason,
        }
        try:
            seq = msg.metadata.sequence.stream
            headers["Nats-Msg-Id"] = f"NOETL_COMMANDS:{seq}"  # dedup a second parking of the same message
        except Exception:
            seq = None
        try:
            assert self._js is not None
            await self._js.publish(dlq_subject(msg.subject), msg.data, headers=headers)
        except Exception as exc:
            # the command is failed (or unknown); losing the copy must not loop the message
            log.error("dead-letter publish failed", subject=msg.subject, error=repr(exc))
        await msg.term()
        self._commands("dead_lettered").inc()
        log.error(
            "command notification dead-lettered",
            subject=msg.subject,
            seq=seq,
            reason=reason,
            error=error,
            command=failed,
        )

    async def _fail_command(self, event_id: int, server_url: str | None, error: str, log: Any) -> str:
        """``failed`` | ``finished`` | why it could not be reported (retried with backoff, bounded)."""
        api = self._api_for(server_url)
        delay = POST_RETRY_INITIAL_SECONDS
        deadline = asyncio.get_running_loop().time() + DEAD_LETTER_FAIL_TIMEOUT_SECONDS
        while True:
            try:
                reply = await api.fail_command(event_id, error, self.config.worker_id)
                return "failed" if reply.get("failed") else "finished"
            except ApiError as exc:
                if exc.status_code == 404:
                    return "unknown command"
                if not _retryable(exc):
                    log.error("the control-api refused to fail the command", error=str(exc))
                    return f"refused: {exc}"
                wait = exc.retry_after if exc.retry_after is not None else delay
                last = str(exc)
            except Exception as exc:
                wait, last = delay, repr(exc)
            if asyncio.get_running_loop().time() + wait > deadline:
                log.error("could not fail the dead-lettered command", error=last)
                return f"unreported: {last}"
            log.warning("failing the dead-lettered command failed; retrying", error=last, retry_in=wait)
            await asyncio.sleep(wait)  # backoff between retries
            delay = min(delay * 2, POST_RETRY_MAX_SECONDS)

    async def _claim_failed(self, msg: Msg, exc: Exception, log: Any) -> None:
        status = exc.status_code if isinstance(exc, ApiError) else None
        if status == 409:
            log.info("command already claimed or finished; dropped")
            await msg.ack()
            self._commands("conflict").inc()
        elif status == 404:
            log.warning("command unknown to the control-api; dropped")
            await msg.ack()
            self._commands("not_found").inc()
        elif _retryable(exc):
            retry_after = exc.retry_after if isinstance(exc, ApiError) else None
            delay = retry_after if retry_after is not None else DEFAULT_NAK_DELAY_SECONDS
            log.info("claim deferred; redelivery requested", status=status, delay=delay, error=str(exc))
            await msg.nak(delay=delay)
            self._commands("retry_later").inc()
        else:
            # A 4xx the claim will never get past (bad request): retrying cannot help.
            log.error("claim refused; dropped", status=status, error=str(exc))
            await msg.ack()
            self._commands("rejected").inc()

    async def _run_claimed(
        self, delivery: _Delivery, claim: ClaimReply, api: ControlPlane, log: Any
    ) -> ClaimReply | None:
        """Run a claimed command and report it; returns the next command when the control-api
        handed one over (eager dispatch)."""
        meta = {"attempt": claim.attempt, "command_id": claim.command_id}

        def event(event_type: str, status: str, context: dict[str, Any] | None = None) -> Event:
            # event_id is minted once per event, so a retried POST of the same object is idempotent.
            return Event(
                execution_id=claim.execution_id,
                event_type=event_type,
                event_id=self.config.snowflake.next_id(),
                step=claim.step,
                status=status,
                created_at=utc_now_iso(),
                context=context,
                worker_id=self.config.worker_id,
                meta=meta,
            )

        lease_lost = asyncio.Event()
        keepalive = [
            asyncio.create_task(self._keep_in_progress(delivery, log)),
            asyncio.create_task(self._heartbeat_events(api, event, lease_lost, claim.lease_seconds, log)),
        ]
        # command.started is minted now but posted only once the tool has run for
        # STARTED_POST_DELAY_SECONDS: a quick tool sends it at the head of its terminal batch
        # (one round trip per step, not two); a slow one has it posted while it runs, and the
        # terminal batch waits for that POST. Either way the API records started first.
        started_event = event("command.started", "RUNNING", {"tool_kind": claim.tool_kind})
        posting = asyncio.Event()

        async def post_started() -> EventsReply:
            await asyncio.sleep(STARTED_POST_DELAY_SECONDS)
            posting.set()
            return await self._post(api, [started_event], log)

        started = asyncio.create_task(post_started())
        started.add_done_callback(lambda task: _stop_on_stale(task, lease_lost))
        try:
            # tools that report through the API (the wasm tool's intents) find the command here
            scope = current_command.set(CommandScope(api, claim.execution_id, claim.step, event))
            # credentials, keychain and secret redaction for this command's tools
            runtime = self._runtime(api, claim)
            runtime_token = current_runtime.set(runtime)
            try:
                outcome = await self._run_pipeline(claim.command, claim.step, lease_lost)
            finally:
                current_runtime.reset(runtime_token)
                current_command.reset(scope)
            leading: list[Event] = []
            if posting.is_set():
                await started  # raises StaleAttemptError / EventRejectedError as the awaited POST did
            else:
                started.cancel()
                leading.append(started_event)
            if outcome is None:
                raise StaleAttemptError("lease lost while the pipeline ran")
            context: dict[str, Any] | None = None
            if outcome.ok:
                try:
                    context = await self._completed_context(api, claim.execution_id, outcome, runtime)
                except Exception as exc:  # refused (e.g. 413 over the API's body limit) or unreachable
                    error = {
                        "message": f"the result store refused the result: {exc}",
                        "type": "ResultStoreError",
                    }
                    outcome = StepOutcome("failed", error=error, task_runs=outcome.task_runs)
            if context is not None:
                terminal = [
                    *leading,
                    event("call.done", "COMPLETED", {"result": context["result"]}),
                    event("command.completed", "COMPLETED", context),
                ]
            else:
                terminal = leading + self._failure_events(event, runtime.redact(outcome.error or {}))
            after: ClaimReply | None = None
            try:
                # no eager command once stopping: the worker is draining, not taking new work;
                # sent together with the terminal batches of commands finishing meanwhile
                wanted = self.config.eager_dispatch and self._running
                after = await self._batcher(api).submit(terminal, eager=wanted)
            except EventRejectedError as exc:
                if not outcome.ok:
                    raise
                # The result itself was refused (e.g. too large): report the step as failed
                # rather than leaving the command to be redelivered and rerun.
                error = {"message": f"control-api refused the result: {exc}", "type": "EventRejected"}
                await self._post(api, leading + self._failure_events(event, error), log)
                outcome = StepOutcome("failed", error=error)
            try:
                # with a next command in hand, do not wait for the ack's round trip
                await delivery.ack(sync=after is None)
            except Exception as exc:
                # The command is recorded; a redelivery will meet a 409 at claim and be dropped.
                log.warning("ack failed after the terminal event was accepted", error=repr(exc))
            self._commands(outcome.status).inc()
            log.info("command finished", status=outcome.status, task_runs=outcome.task_runs)
            return after
        except StaleAttemptError as exc:
            log.warning("stale attempt; another worker owns the command; dropped", reason=str(exc))
            await delivery.ack()
            self._commands("stale_attempt").inc()
        except EventRejectedError as exc:
            log.error("control-api refused the terminal event; redelivery requested", error=str(exc))
            await delivery.nak(DEFAULT_NAK_DELAY_SECONDS)
            self._commands("rejected").inc()
        finally:
            for task in (*keepalive, started):
                task.cancel()
            await asyncio.gather(*keepalive, started, return_exceptions=True)
        return None

    def _runtime(self, api: ControlPlane, claim: ClaimReply) -> ToolRuntime:
        return ToolRuntime(
            api=api,
            execution_id=claim.execution_id,
            event_id=claim.event_id,
            worker_id=self.config.worker_id,
            catalog_path=claim.catalog_path,
            keychain_env_vars=self.config.keychain_env_vars,
            nats_url=self.config.nats_url,
            nats_user=self.config.nats_user,
            nats_password=self.config.nats_password,
            egress=self.config.http_egress,
            duckdb_directories=self.config.duckdb_directories,
        )

    async def _completed_context(
        self, api: ControlPlane, execution_id: int, outcome: StepOutcome, runtime: ToolRuntime
    ) -> dict[str, Any]:
        """``{result, set?}`` with secrets redacted; while the context is too big for an event,
        its largest piece (the result, or one ``set`` value) is stored (ARCHITECTURE §5.6) and
        the event carries the reference instead (tabular → Arrow IPC)."""
        value = outcome.result
        if type(value).__module__.startswith("pyarrow") and hasattr(value, "to_pylist"):
            # a pyarrow Table: rows (stored again as Arrow when big), once it is known to fit
            check_table(value, self.config.arrow_limits)
            value = value.to_pylist()
        context: dict[str, Any] = {"result": runtime.redact(_jsonable(value))}
        # iter.* writes are the pipeline's own; the orchestrator ignores them, so they stay here
        patch = {k: v for k, v in outcome.set.items() if not k.startswith("iter.")}
        if patch:
            context["set"] = runtime.redact(_jsonable(patch))
        stored: set[tuple[str, str | None]] = set()
        while len(msgspec.json.encode(context)) > self.config.result_inline_max_bytes:
            pieces = [(("result", None), context["result"])]
            pieces += [(("set", k), v) for k, v in context.get("set", {}).items()]
            sizes = [(len(msgspec.json.encode(v)), where, v) for where, v in pieces if where not in stored]
            if not sizes:
                break  # everything is a reference already; the API will say what is too big
            _, where, piece = max(sizes, key=lambda item: item[0])
            data, media_type = encode_result(piece)
            ref = await api.put_result(execution_id, data, media_type)
            if where[1] is None:
                context["result"] = ref
            else:
                context["set"][where[1]] = ref
            stored.add(where)
        return context

    @staticmethod
    def _failure_events(event: Callable[..., Event], error: dict[str, Any]) -> list[Event]:
        error = _jsonable(error)
        return [
            event("call.error", "FAILED", {"error": error}),
            event("command.failed", "FAILED", {"error": error}),
        ]

    async def _run_pipeline(
        self, spec: CommandSpec, step: str, lease_lost: asyncio.Event
    ) -> StepOutcome | None:
        """Run the pipeline; None when the lease was lost meanwhile (the run is abandoned)."""
        run = asyncio.ensure_future(self.runner.run(spec, step))
        lost = asyncio.ensure_future(lease_lost.wait())
        try:
            done, _ = await asyncio.wait(
                {run, lost}, timeout=spec.timeout_seconds, return_when=asyncio.FIRST_COMPLETED
            )
            if run in done:
                return run.result()
            if lost in done:
                return None
            return StepOutcome(
                "failed",
                error={
                    "message": f"command timed out after {spec.timeout_seconds:g} s",
                    "type": "TimeoutError",
                },
            )
        finally:
            for fut in (run, lost):
                fut.cancel()
            await asyncio.gather(run, lost, return_exceptions=True)

    def _batcher(self, api: ControlPlane) -> TerminalBatcher:
        """The terminal-event batcher of one control-api (see ``_batching``)."""
        batcher = self._batchers.get(id(api))
        if batcher is None:

            async def post(events: list[Event], eager: EagerRequest | None) -> EventsReply:
                return await self._post(api, events, self._log, eager)

            batcher = self._batchers[id(api)] = TerminalBatcher(
                post,
                worker_id=self.config.worker_id,
                pool=self.config.pool,
                max_batch=self.config.event_batch_max,
            )
        return batcher

    async def _post(
        self, api: ControlPlane, events: list[Event], log: Any, eager: EagerRequest | None = None
    ) -> EventsReply:
        """POST events until accepted; retries reuse the same event ids (idempotent)."""
        delay = POST_RETRY_INITIAL_SECONDS
        while True:
            try:
                if eager is None:
                    return await api.post_events(events)
                return await api.post_events(events, eager)
            except ApiError as exc:
                if exc.status_code == 409:
                    raise StaleAttemptError(str(exc)) from exc
                if not _retryable(exc):
                    raise EventRejectedError(str(exc)) from exc
                wait = exc.retry_after if exc.retry_after is not None else delay
                error = str(exc)
            except Exception as exc:
                if not _retryable(exc):
                    raise
                wait, error = delay, repr(exc)
            EVENT_POST_RETRIES.labels(self.config.pool).inc()
            log.warning(
                "event post failed; retrying",
                error=error,
                retry_in=wait,
                events=[e.event_type for e in events],
            )
            await asyncio.sleep(wait)  # backoff between retries
            delay = min(delay * 2, POST_RETRY_MAX_SECONDS)

    async def _keep_in_progress(self, msg: Msg | _Delivery, log: Any) -> None:
        """Tell JetStream the message is still being worked on, so it is not redelivered."""
        while True:
            await asyncio.sleep(self.config.heartbeat_interval)
            try:
                await msg.in_progress()
            except Exception as exc:
                log.warning("in_progress failed", error=repr(exc))

    async def _heartbeat_events(
        self,
        api: ControlPlane,
        event: Callable[..., Event],
        lease_lost: asyncio.Event,
        lease_seconds: float,
        log: Any,
    ) -> None:
        """Renew the claim's lease with ``command.heartbeat`` events; a 409 means it is lost."""
        # A server with a lease shorter than our interval still gets ~3 renewals per lease.
        interval = min(self.config.heartbeat_interval, max(0.05, lease_seconds / 3))
        while True:
            await asyncio.sleep(interval)
            try:
                await api.post_events([event("command.heartbeat", "RUNNING")])
            except ApiError as exc:
                if exc.status_code == 409:
                    lease_lost.set()
                    return
                log.warning("heartbeat event failed", error=str(exc))
            except Exception as exc:
                log.warning("heartbeat event failed", error=repr(exc))
