"""JetStream stream and consumer definitions with an idempotent ensure (architecture.md §4).

Each stream is kept on ``NOETL_STREAM_REPLICAS`` servers of the NATS cluster (1 by default: one
server). Three replicas keep every acknowledged message through the loss of one server; a
consumer has as many replicas as its stream. Every service that ensures the streams must be
given the same value, or each start would rescale them.
"""

from __future__ import annotations

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

from ._config import stream_replicas
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
DUPLICATE_WINDOW_SECONDS = 120.0


def commands_stream_config(replicas: int = 1) -> StreamConfig:
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
    return StreamConfig(
        name=DLQ_STREAM,
        subjects=[f"{DLQ_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=30 * 24 * 3600.0,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
        num_replicas=replicas,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or update it to ``config`` when it exists with other settings."""
    assert config.name is not None
    try:
        await js.stream_info(config.name)
    except NotFoundError:
        try:
            await js.add_stream(config)
            return
        except BadRequestError:
            # Another process created it between our lookup and add.
            pass
    await js.update_stream(config)


async def ensure_streams(
    js: JetStreamContext,
    events_max_age_seconds: float = DEFAULT_EVENTS_MAX_AGE_SECONDS,
    *,
    replicas: int | None = None,
) -> None:
    """Ensure all three streams; safe to call from every service at every start.

    ``replicas`` defaults to ``NOETL_STREAM_REPLICAS`` of this process's environment (which the
    services check at start, so a bad value never reaches here)."""
    replicas = stream_replicas() if replicas is None else replicas
    await ensure_stream(js, commands_stream_config(replicas))
    await ensure_stream(js, events_stream_config(events_max_age_seconds, replicas))
    await ensure_stream(js, dlq_stream_config(replicas))


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
