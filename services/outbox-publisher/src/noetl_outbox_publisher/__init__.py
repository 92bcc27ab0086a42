"""Relays the transactional outbox to JetStream."""

from ._config import PublisherConfig, RelaySettings
from ._nats import NatsLink
from ._ports import OutboxSource
from ._relay import OutboxPublisher

__all__ = ["NatsLink", "OutboxPublisher", "OutboxSource", "PublisherConfig", "RelaySettings"]
