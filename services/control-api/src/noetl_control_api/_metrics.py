"""Prometheus metrics of the control-api (``noetl_control_api_*``), one registry per process."""

from __future__ import annotations

from noetl_common import counter, gauge, histogram

SERVICE = "control-api"

REQUEST_LATENCY = histogram(
    SERVICE,
    "request_duration_seconds",
    "HTTP request latency by route template",
    ["method", "route", "status"],
)
OUTBOX_PENDING = gauge(SERVICE, "outbox_pending", "Outbox rows not yet published (PENDING or IN_FLIGHT)")
CLAIMS = counter(SERVICE, "command_claims_total", "Command claim attempts by outcome", ["outcome"])
EVENTS = counter(SERVICE, "events_total", "Worker events received by outcome", ["outcome"])
OUTBOX_CLAIMED = counter(SERVICE, "outbox_claimed_rows_total", "Outbox rows handed to publishers")
PROJECTED = counter(
    SERVICE, "projected_events_total", "Events written to the read model by outcome", ["outcome"]
)
OUTBOX_WAITERS = gauge(SERVICE, "outbox_claim_waiters", "Outbox claims currently long-polling for new rows")
EXECUTION_WAITERS = gauge(
    SERVICE, "execution_waiters", "GET /api/executions/{id}?wait= requests held until the execution ends"
)
EXECUTION_WAITS = counter(
    SERVICE,
    "execution_waits_total",
    "Held execution reads by how each wait ended: woken (by the end's NOTIFY, a reconnect or shutdown) or timeout",
    ["outcome"],
)
STREAM_WAKEUPS = counter(
    SERVICE,
    "stream_wakeups_total",
    "Event-stream waits ended early: by a NOTIFY naming the stream's execution, a batch too wide "
    "to name its executions, or a listener reconnect",
)
SWEEP_ROUNDS = counter(
    SERVICE,
    "sweep_rounds_total",
    "Sweeper rounds by outcome: leader (this replica swept), follower (another held the lock), error",
    ["outcome"],
)
SWEEP_ROUND_SECONDS = histogram(SERVICE, "sweep_round_seconds", "Duration of a round this replica led")
SWEEP_ACTIONS = counter(
    SERVICE,
    "sweep_actions_total",
    "What the sweeper did: playbook_timeout, pool_absent, step_timeout, reissued, republished, retention",
    ["action"],
)
RETENTION_DELETED = counter(
    SERVICE,
    "retention_deleted_total",
    "Rows deleted by the retention policy the sweeper runs on its schedule, by kind",
    ["kind"],
)
