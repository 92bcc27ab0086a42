"""Prometheus metrics of the publisher (``noetl_outbox_publisher_*``), one registry per process."""

from __future__ import annotations

from noetl_common import counter, gauge, histogram

SERVICE = "outbox-publisher"
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 4000)

ROWS_PUBLISHED = counter(SERVICE, "rows_published_total", "Outbox rows acknowledged by JetStream")
DUPLICATES = counter(
    SERVICE, "duplicates_total", "Acks JetStream flagged as duplicate (a re-published row, dropped by Msg-Id)"
)
PUBLISH_FAILURES = counter(
    SERVICE, "publish_failures_total", "Rows whose publish failed and were marked failed"
)
DEAD_LETTERED = counter(
    SERVICE,
    "rows_dead_lettered_total",
    "Rows that could not be published (too large, or out of attempts): copied to NOETL_DLQ, marked dead",
)
API_ERRORS = counter(SERVICE, "api_errors_total", "Failed control-api calls", ["op"])
BATCH_SIZE = histogram(SERVICE, "batch_size", "Rows per claimed batch", buckets=BATCH_BUCKETS)
COMMIT_TO_ACK = histogram(
    SERVICE,
    "commit_to_ack_seconds",
    "From the event's created_at (its outbox commit) to the JetStream ack",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
PUBLISH_TO_ACK = histogram(SERVICE, "batch_ack_seconds", "From a batch's first publish to its last ack")
IN_FLIGHT = gauge(SERVICE, "in_flight_rows", "Rows published and awaiting their JetStream ack")
