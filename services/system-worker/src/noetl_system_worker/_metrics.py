"""The worker's prometheus metrics (``noetl_system_worker_*``), one set per process."""

from __future__ import annotations

from noetl_common import counter, gauge, histogram

SERVICE = "system_worker"

COMMANDS = counter(
    SERVICE,
    "commands_total",
    "Command messages handled, by outcome (completed, failed, conflict, not_found, "
    "undecodable, dead_lettered, stale_attempt, released, rejected, finished_here), and claims "
    "without a verdict "
    "(claim_retried, lease_held)",
    ["pool", "outcome"],
)
DISPATCH_SECONDS = histogram(
    SERVICE,
    "dispatch_duration_seconds",
    "Wall time of one tool call, by tool kind",
    ["tool_kind"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
IN_FLIGHT = gauge(SERVICE, "in_flight", "Commands being handled by this worker right now", ["pool"])
EVENT_POST_RETRIES = counter(
    SERVICE, "event_post_retries_total", "Retried POST /api/events calls (the API was unavailable)", ["pool"]
)
CONSUMER_PENDING = gauge(
    SERVICE, "consumer_pending", "Messages of the pool's consumer not yet delivered to any worker", ["pool"]
)
CONSUMER_ACK_PENDING = gauge(
    SERVICE, "consumer_ack_pending", "Messages of the pool's consumer delivered but not yet acked", ["pool"]
)
PLUGIN_DOWNLOADS = counter(
    SERVICE,
    "plugin_downloads_total",
    "WASM plug-in modules downloaded from the registry (a 304 revalidation is not counted)",
    ["path"],
)
PLUGIN_LOAD_SECONDS = histogram(
    SERVICE,
    "plugin_load_seconds",
    "Time to load a changed WASM plug-in module: fetch + deserialize (source=cache, from "
    "WASM_MODULE_CACHE_DIR) or fetch + compile (source=registry)",
    ["pool", "source"],
    buckets=(0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WASM_CALLS = counter(
    SERVICE, "wasm_calls_total", "WASM plug-in calls by outcome (ok or the error type)", ["outcome"]
)


def count_command(pool: str, outcome: str) -> None:
    """One command message handled with ``outcome`` (a ``commands_total`` label)."""
    COMMANDS.labels(pool, outcome).inc()
