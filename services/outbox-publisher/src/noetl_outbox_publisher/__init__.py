"""Relays the transactional outbox to JetStream."""

from noetl_common import NatsLink

from ._config import PublisherConfig, RelaySettings
from ._ports import OutboxSource
from ._relay import OutboxPublisher

__all__ = ["NatsLink", "OutboxPublisher", "OutboxSource", "PublisherConfig", "RelaySettings"]
