"""Relays the transactional outbox to JetStream."""
