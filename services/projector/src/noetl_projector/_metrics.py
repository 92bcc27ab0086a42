"""Prometheus metrics of the projector (``noetl_projector_*``), one registry per process."""

from __future__ import annotations

from noetl_common import counter, gauge, histogram

SERVICE = "projector"
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2000, 5000, 10000)

EVENTS_PROJECTED = counter(SERVICE, "events_projected_total", "Events newly written to noetl.event")
DUPLICATES = counter(SERVICE, "duplicates_total", "Events the API already had (redelivery or re-publish)")
MESSAGES_ACKED = counter(SERVICE, "messages_acked_total", "Messages acked after the API accepted them")
REDELIVERED = counter(SERVICE, "redelivered_total", "Messages received on their second or later delivery")
NAKS = counter(SERVICE, "naks_total", "Messages nak'ed with a delay after a failed projection")
SINK_FAILURES = counter(SERVICE, "sink_failures_total", "Failed project calls", ["kind"])
DEAD_LETTERED = counter(SERVICE, "dead_lettered_total", "Messages moved to NOETL_DLQ", ["reason"])
DLQ_FAILURES = counter(SERVICE, "dlq_publish_failures_total", "Failed publishes to NOETL_DLQ")
BATCH_SIZE = histogram(SERVICE, "batch_size", "Messages per fetched batch", buckets=BATCH_BUCKETS)
PROJECT_SECONDS = histogram(SERVICE, "project_seconds", "Duration of one project_events call")
PENDING = gauge(SERVICE, "consumer_pending", "Messages left in the consumer after the last fetched one")
