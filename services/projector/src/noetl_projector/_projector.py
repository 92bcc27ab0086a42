"""The projection loop: fetch a batch from NOETL_EVENTS → one project call → ack.

Shape (architecture.md §4/§5.7, STYLE "worker loop"): a durable pull consumer
``noetl_projector_<shard>``; each fetched batch is decoded to ``Event``s and sent to
the control-api in one ``project_events`` call; the messages are acked only after a
2xx. While the call runs, ``in_progress`` keeps the batch from redelivering.

Failures never loop hot and never loop forever:

* a message that does not decode is poison: it goes to ``NOETL_DLQ`` (original subject
  and error in headers) and is terminated;
* a batch the API rejects as invalid (400/413/422) is bisected until the offending
  events are isolated; those go to the DLQ, the rest are projected;
* any other failure (API down, 5xx, timeout) naks the batch with an exponential delay
  and backs the loop off; a message on its last allowed delivery (``max_deliver``) is
  parked in the DLQ instead of being dropped silently.

Before the first fetch it checks what it would run on: the streams (never overwritten, an
unsafe one refuses the start) and the control-api's ``NOETL_EVENT_SHARD_COUNT``, which must be
its own — the control-api spreads event subjects over that many shards, and a projector that
counts differently would leave shards nobody consumes (refuses the start: exit 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

import msgspec
import nats.errors
import structlog
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from noetl_common import (
    DLQ_STREAM,
    EVENTS_STREAM,
    ApiError,
    Backoff,
    ConfigError,
    Event,
    GraceExpired,
    Puller,
    delivery,
    dlq_subject,
    ensure_consumer,
    ensure_streams,
    finish_within_grace,
    wait_or_stop,
)
from structlog.typing import FilteringBoundLogger

from . import _metrics as m
from ._config import ProjectorSettings
from ._ports import EventSink

#: Statuses meaning "this content is wrong", not "the API is unwell": bisect, don't retry.
_REJECTED = frozenset({400, 413, 422})
#: Redelivery delay of a batch handed back at shutdown.
RELEASE_NAK_DELAY_SECONDS = 1.0

HEADER_ORIGINAL_SUBJECT = "Noetl-Original-Subject"
HEADER_ERROR = "Noetl-Error"
HEADER_REASON = "Noetl-Reason"
HEADER_STREAM_SEQ = "Noetl-Stream-Seq"


class Undecodable(ValueError):
    """The message is not an ``Event`` this projector can store."""


def _header_safe(text: str, limit: int = 1000) -> str:
    return " ".join(text.split())[:limit]


def consumer_config(settings: ProjectorSettings) -> ConsumerConfig:
    """The durable pull consumer of one projector shard."""
    return ConsumerConfig(
        durable_name=settings.consumer_name,
        filter_subject=settings.filter_subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=settings.ack_wait_seconds,
        max_deliver=settings.max_deliver,
        max_ack_pending=max(1000, settings.batch_size * 4),
    )


class Projector:
    """Projects NOETL_EVENTS (one shard) into the control-api until ``stop`` is set."""

    def __init__(
        self,
        sink: EventSink,
        nc: NATS,
        settings: ProjectorSettings,
        *,
        connected: Callable[[], bool] = lambda: True,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self._sink = sink
        self._nc = nc
        self._js = nc.jetstream()
        self._settings = settings
        self._connected = connected
        self._log: FilteringBoundLogger = log if log is not None else structlog.get_logger(service=m.SERVICE)
        self._decoder = msgspec.json.Decoder(Event)
        self._running = False
        self._consumer_ready = False
        self._shards_checked = False
        self._sink_ok = True
        self._last_progress = time.monotonic()

    # -- health --------------------------------------------------------------------------
    def ready(self) -> bool:
        """True while the loop runs on its consumer, NATS is connected and the API accepts."""
        stalled_after = self._settings.fetch_timeout_seconds + 60
        return (
            self._running
            and self._consumer_ready
            and self._sink_ok
            and self._connected()
            and time.monotonic() - self._last_progress < stalled_after
        )

    def details(self) -> dict[str, Any]:
        """The loop state behind ``ready`` for ``/readyz``."""
        return {
            "running": self._running,
            "consumer": self._settings.consumer_name,
            "filter_subject": self._settings.filter_subject,
            "consumer_ready": self._consumer_ready,
            "shard_count_checked": self._shards_checked,
            "sink_ok": self._sink_ok,
            "nats_connected": self._connected(),
            "seconds_since_progress": round(time.monotonic() - self._last_progress, 3),
        }

    # -- loop ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Fetch and project until ``stop``; then finish the batch in hand and return."""
        self._running = True
        try:
            sub = await self._subscribe(stop)
            if sub is None:
                return
            try:
                await self._loop(sub, stop)
            finally:
                with contextlib.suppress(Exception):
                    await sub.stop()
        finally:
            self._running = False

    async def _loop(self, sub: Puller, stop: asyncio.Event) -> None:
        """Fetch, project and ack, batch after batch, until ``stop``."""
        backoff = Backoff(self._settings.max_backoff_seconds)
        while not stop.is_set():
            try:
                msgs = await sub.fetch(
                    self._settings.batch_size, timeout=self._settings.fetch_timeout_seconds
                )
                msgs += await self._linger(sub, len(msgs), stop)
            except (TimeoutError, nats.errors.TimeoutError):
                self._last_progress = time.monotonic()
                continue
            except Exception as exc:
                delay = backoff.next()
                self._log.warning("projector_fetch_failed", error=str(exc), retry_in=round(delay, 2))
                await wait_or_stop(stop, delay)
                continue
            self._last_progress = time.monotonic()
            try:
                handled = await finish_within_grace(
                    self._handle(msgs), stop, self._settings.shutdown_grace_seconds
                )
            except GraceExpired:
                self._log.warning("projector_batch_released_at_shutdown", messages=len(msgs))
                break
            except Exception:
                # An ack/nak/term that could not be sent (connection closed mid-batch):
                # the unsettled messages come back after ack_wait; keep the loop alive.
                self._log.exception("projector_batch_failed", messages=len(msgs))
                handled = False
            if handled:
                backoff.reset()
            else:
                await wait_or_stop(stop, backoff.next())

    async def _linger(self, sub: Puller, have: int, stop: asyncio.Event) -> list[Msg]:
        """More messages for a batch that is not full: a trickle of events (one execution's
        steps) would otherwise cost a project call, a transaction and a NOTIFY each few
        events. Takes what arrives within ``linger_seconds``, and stops early once the batch
        is full."""
        missing = self._settings.batch_size - have
        if missing <= 0 or self._settings.linger_seconds <= 0:
            return []
        deadline = time.monotonic() + self._settings.linger_seconds
        more: list[Msg] = []
        while len(more) < missing and not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                # what is there now (a no_wait pull), then what comes until the batch is full
                # or ``left`` runs out (one pull that expires with it); what is delivered after
                # it gave up is in the puller's hands for the next fetch
                more += await sub.fetch(missing - len(more), timeout=max(left, 0.01), fill=True)
            except (TimeoutError, nats.errors.TimeoutError):
                break
        return more

    async def _subscribe(self, stop: asyncio.Event) -> Puller | None:
        backoff = Backoff(self._settings.max_backoff_seconds)
        while not stop.is_set():
            try:
                await ensure_streams(
                    self._js,
                    self._settings.events_max_age_seconds,
                    streams=(EVENTS_STREAM, DLQ_STREAM),
                    log=self._log,
                )
                await self._check_shard_count()
                await ensure_consumer(self._js, EVENTS_STREAM, consumer_config(self._settings))
                sub = Puller(self._nc, EVENTS_STREAM, self._settings.consumer_name)
                await sub.start()
            except ConfigError:
                raise  # a stream or a shard count the suite cannot run on: refuse to start (exit 2)
            except Exception as exc:
                delay = backoff.next()
                self._log.warning("projector_subscribe_failed", error=str(exc), retry_in=round(delay, 2))
                await wait_or_stop(stop, delay)
                continue
            self._consumer_ready = True
            self._log.info(
                "projector_subscribed",
                consumer=self._settings.consumer_name,
                filter_subject=self._settings.filter_subject,
            )
            return sub
        return None

    async def _check_shard_count(self) -> None:
        """The control-api's ``NOETL_EVENT_SHARD_COUNT`` against ours (once; raises while the
        API is unreachable, so the caller retries): different counts raise ``ConfigError``."""
        if self._shards_checked:
            return
        try:
            limits = await self._sink.limits()
        except Exception as exc:
            self._sink_ok = False
            self._log.warning("projector_limits_unavailable", error=str(exc) or repr(exc))
            raise
        self._sink_ok = True
        ours, theirs = self._settings.shard_count, limits.event_shard_count
        if theirs is None:
            self._log.warning("projector_shard_count_unchecked", shard_count=ours, reason="not declared by the API")
        elif theirs != ours:
            raise ConfigError(
                f"NOETL_EVENT_SHARD_COUNT is {ours} here but {theirs} at the control-api: events of"
                f" shards this projector does not count would never be projected; give both the same value"
            )
        else:
            self._log.info("projector_shard_count_checked", shard_count=ours)
        self._shards_checked = True

    # -- one batch -----------------------------------------------------------------------
    async def _handle(self, msgs: list[Msg]) -> bool:
        """Project one fetched batch; False when it was nak'ed for a later retry."""
        m.BATCH_SIZE.observe(len(msgs))
        good: list[Msg] = []
        events: list[Event] = []
        pending: int | None = None
        for msg in msgs:
            delivered, _, pending = delivery(msg)
            if delivered > 1:
                m.REDELIVERED.inc()
            try:
                events.append(self._decode(msg))
            except Undecodable as exc:
                await self._dead_letter(msg, str(exc), "undecodable")
                continue
            good.append(msg)
        if pending is not None:  # the batch's last message tells what is left behind it
            m.PENDING.set(pending)
        if not good:
            return True
        keepalive = asyncio.create_task(self._keep_in_progress(good))
        try:
            return await self._project(good, events)
        except asyncio.CancelledError:
            # Shutdown ran out of grace: hand the batch back for redelivery (after a short
            # delay, as every nak: nothing may loop hot).
            for msg in good:
                with contextlib.suppress(nats.errors.Error):
                    await msg.nak(delay=RELEASE_NAK_DELAY_SECONDS)
            raise
        finally:
            keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keepalive

    def _decode(self, msg: Msg) -> Event:
        try:
            event = self._decoder.decode(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise Undecodable(f"not an Event: {exc}") from None
        if event.event_id is None:
            raise Undecodable("Event without event_id cannot be projected")
        return event

    async def _project(self, msgs: list[Msg], events: list[Event]) -> bool:
        started = time.monotonic()
        try:
            reply = await self._sink.project_events(events)
        except ApiError as exc:
            if exc.status_code not in _REJECTED:
                return await self._retry_later(msgs, exc, f"http_{exc.status_code}")
            m.SINK_FAILURES.labels("rejected").inc()
            if len(msgs) == 1:
                await self._dead_letter(msgs[0], str(exc), "rejected")
                return True
            # Isolate the events the API refuses; the others are still projected.
            half = len(msgs) // 2
            left = await self._project(msgs[:half], events[:half])
            right = await self._project(msgs[half:], events[half:])
            return left and right
        except Exception as exc:
            return await self._retry_later(msgs, exc, "unavailable")
        finally:
            m.PROJECT_SECONDS.observe(time.monotonic() - started)
        self._sink_ok = True
        for msg in msgs:
            await msg.ack()
        m.MESSAGES_ACKED.inc(len(msgs))
        m.EVENTS_PROJECTED.inc(reply.projected)
        m.DUPLICATES.inc(reply.duplicates)
        return True

    async def _retry_later(self, msgs: list[Msg], exc: BaseException, kind: str) -> bool:
        self._sink_ok = False
        m.SINK_FAILURES.labels(kind).inc()
        self._log.warning("projector_project_failed", messages=len(msgs), error=str(exc), kind=kind)
        settings = self._settings
        for msg in msgs:
            delivered = delivery(msg).delivered
            if delivered >= settings.max_deliver:
                await self._dead_letter(msg, f"max_deliver ({delivered}) reached: {exc}", "max_deliver")
                continue
            delay = min(settings.nak_max_delay_seconds, settings.nak_delay_seconds * 2 ** (delivered - 1))
            await msg.nak(delay=delay)
            m.NAKS.inc()
        return False

    async def _dead_letter(self, msg: Msg, error: str, reason: str) -> None:
        """Copy ``msg`` to NOETL_DLQ with its subject and error, then terminate it."""
        seq = delivery(msg).stream_seq
        headers = {
            HEADER_ORIGINAL_SUBJECT: msg.subject,
            HEADER_ERROR: _header_safe(error),
            HEADER_REASON: reason,
            HEADER_STREAM_SEQ: str(seq),
            # Dedup if this message is dead-lettered again before the term lands.
            "Nats-Msg-Id": f"{EVENTS_STREAM}:{seq}",
        }
        try:
            await self._js.publish(dlq_subject(msg.subject), msg.data, headers=headers)
        except Exception as exc:
            m.DLQ_FAILURES.inc()
            self._log.error("projector_dlq_publish_failed", subject=msg.subject, seq=seq, error=str(exc))
            await msg.nak(delay=self._settings.nak_max_delay_seconds)
            return
        await msg.term()
        m.DEAD_LETTERED.labels(reason).inc()
        self._log.warning("projector_dead_lettered", subject=msg.subject, seq=seq, reason=reason, error=error)

    async def _keep_in_progress(self, msgs: list[Msg]) -> None:
        """Extend the ack deadline of a batch whose project call outlives ``ack_wait``."""
        interval = self._settings.ack_wait_seconds / 3
        while True:
            await asyncio.sleep(interval)
            for msg in msgs:
                # Already settled (acked, nak'ed or dead-lettered during a bisection).
                with contextlib.suppress(nats.errors.Error):
                    await msg.in_progress()
