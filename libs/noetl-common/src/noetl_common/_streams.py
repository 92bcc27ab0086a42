"""The suite's JetStream streams, declared once, and the consumers (architecture.md §4).

Every stream has one declared configuration, here: subjects, retention, storage, replicas,
max age, duplicate window. Each stream is kept on ``NOETL_STREAM_REPLICAS`` servers of the NATS
cluster (1 by default: one server); three replicas keep every acknowledged message through the
loss of one server. ``ensure_streams`` creates a missing stream with it (whichever
service starts first) and never updates an existing one: a stream that differs is compared
setting by setting (``_stream_check``); safe differences (a more generous stream) are logged,
unsafe ones make the service refuse to start with :class:`StreamConfigConflict` (a
``ConfigError``: one line, exit 2) instead of silently overwriting what an operator, or
another service's settings, made of it — a stream with fewer replicas than declared among
them: raising the replicas of an existing stream is an operator's act (``nats stream edit``).
Each service ensures the streams it uses.
"""

from __future__ import annotations

from collections.abc import Iterable

import structlog
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError, NotFoundError
from structlog.typing import FilteringBoundLogger

from ._config import stream_replicas
from ._stream_check import StreamConfigConflict, stream_differences
from ._subjects import (
    COMMAND_SUBJECT_PREFIX,
    COMMANDS_STREAM,
    DLQ_STREAM,
    DLQ_SUBJECT_PREFIX,
    EVENT_SUBJECT_PREFIX,
    EVENTS_STREAM,
    POOL_FILTER_MAP,
    consumer_name,
)

DEFAULT_EVENTS_MAX_AGE_SECONDS = 7 * 24 * 3600.0
DLQ_MAX_AGE_SECONDS = 30 * 24 * 3600.0
DUPLICATE_WINDOW_SECONDS = 120.0
ALL_STREAMS = (COMMANDS_STREAM, EVENTS_STREAM, DLQ_STREAM)


def commands_stream_config(replicas: int = 1) -> StreamConfig:
    """``NOETL_COMMANDS``: a work queue (a message is gone once acked), no age limit."""
    return StreamConfig(
        name=COMMANDS_STREAM,
        subjects=[COMMAND_SUBJECT_PREFIX, f"{COMMAND_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=replicas,
    )


def events_stream_config(
    max_age_seconds: float = DEFAULT_EVENTS_MAX_AGE_SECONDS, replicas: int = 1
) -> StreamConfig:
    """``NOETL_EVENTS``: the event log, kept ``max_age_seconds`` (``NOETL_EVENTS_MAX_AGE_SECONDS``)."""
    return StreamConfig(
        name=EVENTS_STREAM,
        subjects=[f"{EVENT_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age_seconds,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=replicas,
    )


def dlq_stream_config(replicas: int = 1) -> StreamConfig:
    """``NOETL_DLQ``: poison messages, kept 30 days."""
    return StreamConfig(
        name=DLQ_STREAM,
        subjects=[f"{DLQ_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=DLQ_MAX_AGE_SECONDS,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=replicas,
    )


def declared_streams(
    events_max_age_seconds: float = DEFAULT_EVENTS_MAX_AGE_SECONDS, *, replicas: int = 1
) -> dict[str, StreamConfig]:
    """The declared configuration of every stream, by name."""
    return {
        COMMANDS_STREAM: commands_stream_config(replicas),
        EVENTS_STREAM: events_stream_config(events_max_age_seconds, replicas),
        DLQ_STREAM: dlq_stream_config(replicas),
    }


async def ensure_stream(
    js: JetStreamContext, config: StreamConfig, log: FilteringBoundLogger | None = None
) -> None:
    """Create the stream with ``config`` when it is missing; otherwise leave it as it is, log
    how it differs, and raise :class:`StreamConfigConflict` when a difference is unsafe."""
    assert config.name is not None
    log = log if log is not None else structlog.get_logger(service="noetl-common")
    try:
        info = await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            log.info(
                "stream_created", stream=config.name, replicas=config.num_replicas, max_age=config.max_age
            )
            return
        except BadRequestError as refused:
            # Another process created it between our lookup and add (with other settings),
            # or the server refuses the configuration (e.g. more replicas than servers).
            try:
                info = await js.stream_info(config.name)
            except NotFoundError:
                raise refused from None
    differences = stream_differences(info.config, config)
    for difference in differences:
        log.log(
            40 if difference.unsafe else 30,  # error / warning
            "stream_config_differs",
            stream=difference.stream,
            setting=difference.setting,
            found=difference.found,
            declared=difference.declared,
            unsafe=difference.unsafe,
            action="refusing to start" if difference.unsafe else "left as it is",
        )
    unsafe = [d for d in differences if d.unsafe]
    if unsafe:
        raise StreamConfigConflict(unsafe)


async def ensure_streams(
    js: JetStreamContext,
    events_max_age_seconds: float = DEFAULT_EVENTS_MAX_AGE_SECONDS,
    *,
    replicas: int | None = None,
    streams: Iterable[str] = ALL_STREAMS,
    log: FilteringBoundLogger | None = None,
) -> None:
    """Ensure the named streams (all three by default) with their declared configuration;
    safe to call from every service at every start. Raises :class:`StreamConfigConflict`
    when one exists with settings the suite cannot run on.

    ``replicas`` defaults to ``NOETL_STREAM_REPLICAS`` of this process's environment (which the
    services check at start, so a bad value never reaches here)."""
    replicas = stream_replicas() if replicas is None else replicas
    declared = declared_streams(events_max_age_seconds, replicas=replicas)
    for name in streams:
        await ensure_stream(js, declared[name], log)


def pool_consumer_config(
    pool: str, *, ack_wait_seconds: float = 30.0, max_deliver: int = 10, max_ack_pending: int = 1000
) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=consumer_name(pool),
        filter_subject=POOL_FILTER_MAP[pool],
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_seconds,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    """Create or update a durable pull consumer (idempotent)."""
    await js.add_consumer(stream, config)
