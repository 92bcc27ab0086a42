"""JetStream stream and consumer definitions with an idempotent ensure (architecture.md §4)."""

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


def commands_stream_config() -> StreamConfig:
    return StreamConfig(
        name=COMMANDS_STREAM,
        subjects=[COMMAND_SUBJECT_PREFIX, f"{COMMAND_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )


def events_stream_config(max_age_seconds: float = DEFAULT_EVENTS_MAX_AGE_SECONDS) -> StreamConfig:
    return StreamConfig(
        name=EVENTS_STREAM,
        subjects=[f"{EVENT_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=max_age_seconds,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
    )


def dlq_stream_config() -> StreamConfig:
    return StreamConfig(
        name=DLQ_STREAM,
        subjects=[f"{DLQ_SUBJECT_PREFIX}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        max_age=30 * 24 * 3600.0,
        duplicate_window=DUPLICATE_WINDOW_SECONDS,
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
    js: JetStreamContext, events_max_age_seconds: float = DEFAULT_EVENTS_MAX_AGE_SECONDS
) -> None:
    """Ensure all three streams; safe to call from every service at every start."""
    await ensure_stream(js, commands_stream_config())
    await ensure_stream(js, events_stream_config(events_max_age_seconds))
    await ensure_stream(js, dlq_stream_config())


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
