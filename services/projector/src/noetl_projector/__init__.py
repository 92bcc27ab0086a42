"""Projects NOETL_EVENTS into the noetl.event log."""

from noetl_common import NatsLink

from ._config import ProjectorConfig, ProjectorSettings, resolve_shard
from ._ports import EventSink
from ._projector import (
    HEADER_ERROR,
    HEADER_ORIGINAL_SUBJECT,
    HEADER_REASON,
    HEADER_STREAM_SEQ,
    Projector,
    consumer_config,
)

__all__ = [
    "HEADER_ERROR",
    "HEADER_ORIGINAL_SUBJECT",
    "HEADER_REASON",
    "HEADER_STREAM_SEQ",
    "EventSink",
    "NatsLink",
    "Projector",
    "ProjectorConfig",
    "ProjectorSettings",
    "consumer_config",
    "resolve_shard",
]
