"""The Grafana dashboard (deploy/grafana/noetl-dashboard.json), built from one metric table.

:data:`METRICS` is the list of series the dashboard reads. Names marked provisional are
what the services are expected to export (``noetl_<service>_<name>``, architecture.md §10);
docs/deploy-kubernetes.md lists them so each service's owner can match or rename them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

DASHBOARD_PATH = "deploy/grafana/noetl-dashboard.json"
DASHBOARD_UID = "noetl-control-plane"


@dataclass(frozen=True)
class Metric:
    name: str
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    meaning: str
    provisional: bool = True  # not exported by any service yet


METRICS: tuple[Metric, ...] = (
    Metric("noetl_control_api_outbox_pending", "gauge", (), "outbox rows not yet published", False),
    Metric(
        "noetl_control_api_request_duration_seconds",
        "histogram",
        ("method", "route", "status"),
        "HTTP latency",
        False,
    ),
    Metric(
        "noetl_control_api_command_claims_total", "counter", ("outcome",), "claim replies by outcome", False
    ),
    Metric(
        "noetl_outbox_publisher_rows_published_total", "counter", (), "outbox rows acked by JetStream", False
    ),
    Metric("noetl_outbox_publisher_publish_failures_total", "counter", (), "rows marked failed", False),
    Metric(
        "noetl_outbox_publisher_commit_to_ack_seconds",
        "histogram",
        (),
        "outbox commit to JetStream ack",
        False,
    ),
    Metric(
        "noetl_outbox_publisher_batch_ack_seconds",
        "histogram",
        (),
        "first publish to last ack of a batch",
        False,
    ),
    Metric("noetl_projector_events_projected_total", "counter", (), "events written to noetl.event", False),
    Metric("noetl_projector_duplicates_total", "counter", (), "events already projected", False),
    Metric("noetl_projector_project_seconds", "histogram", (), "one project_events call", False),
    Metric(
        "noetl_projector_consumer_pending", "gauge", (), "NOETL_EVENTS messages left for this shard", False
    ),
    Metric(
        "noetl_system_worker_commands_total",
        "counter",
        ("pool", "outcome"),
        "command messages by claim/run outcome",
        False,
    ),
    Metric(
        "noetl_system_worker_dispatch_duration_seconds", "histogram", ("tool_kind",), "tool run time", False
    ),
    Metric("noetl_system_worker_in_flight", "gauge", ("pool",), "commands running now", False),
    Metric(
        "noetl_system_worker_consumer_pending",
        "gauge",
        ("pool",),
        "messages of the pool's consumer not yet delivered",
        False,
    ),
    Metric(
        "noetl_system_worker_consumer_ack_pending",
        "gauge",
        ("pool",),
        "messages delivered but not yet acked",
        False,
    ),
    Metric(
        "noetl_system_worker_plugin_load_seconds",
        "histogram",
        ("pool", "source"),
        "WASM module load (cache|registry)",
        False,
    ),
)


def _target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "expr": expr,
        "legendFormat": legend,
        "refId": ref,
    }


def _panel(pid: int, title: str, unit: str, targets: list[tuple[str, str]], x: int, y: int) -> dict[str, Any]:
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}},
        "targets": [_target(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(targets)],
    }


def _quantile(q: float, metric: str, by: str) -> str:
    group = f"le, {by}" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({metric}_bucket[$__rate_interval])))"


def build_dashboard() -> dict[str, Any]:
    rows = [
        (
            "Pipeline lag: outbox pending and consumer pending",
            "short",
            [
                ("max(noetl_control_api_outbox_pending)", "outbox pending"),
                # Every worker of a pool reports the same consumer, hence max, not sum.
                ("max by (pool) (noetl_system_worker_consumer_pending)", "commands pending {{pool}}"),
                ("max by (pool) (noetl_system_worker_consumer_ack_pending)", "commands in progress {{pool}}"),
                ("sum(noetl_projector_consumer_pending)", "events pending (projector)"),
            ],
        ),
        (
            "Publish latency: outbox commit to JetStream ack",
            "s",
            [
                (_quantile(0.95, "noetl_outbox_publisher_commit_to_ack_seconds", ""), "p95"),
                (_quantile(0.5, "noetl_outbox_publisher_commit_to_ack_seconds", ""), "p50"),
                (_quantile(0.95, "noetl_outbox_publisher_batch_ack_seconds", ""), "batch ack p95"),
            ],
        ),
        (
            "Publish throughput",
            "ops",
            [
                ("sum(rate(noetl_outbox_publisher_rows_published_total[$__rate_interval]))", "rows/s"),
                ("sum(rate(noetl_outbox_publisher_publish_failures_total[$__rate_interval]))", "failures/s"),
            ],
        ),
        (
            "Claim outcomes",
            "reqps",
            [
                (
                    "sum by (outcome) (rate(noetl_control_api_command_claims_total[$__rate_interval]))",
                    "api {{outcome}}",
                ),
                (
                    "sum by (pool, outcome) (rate(noetl_system_worker_commands_total[$__rate_interval]))",
                    "worker {{pool}} {{outcome}}",
                ),
            ],
        ),
        (
            "Dispatch duration p95 by tool kind",
            "s",
            [
                (
                    _quantile(0.95, "noetl_system_worker_dispatch_duration_seconds", "tool_kind"),
                    "{{tool_kind}}",
                )
            ],
        ),
        (
            "Plug-in load time p95 (cache vs registry)",
            "s",
            [
                (
                    _quantile(0.95, "noetl_system_worker_plugin_load_seconds", "pool, source"),
                    "{{pool}} {{source}}",
                )
            ],
        ),
        (
            "Projector throughput and latency",
            "short",
            [
                ("sum(rate(noetl_projector_events_projected_total[$__rate_interval]))", "projected/s"),
                ("sum(rate(noetl_projector_duplicates_total[$__rate_interval]))", "duplicates/s"),
                (_quantile(0.95, "noetl_projector_project_seconds", ""), "project call p95 (s)"),
            ],
        ),
        (
            "Control API latency p95 by route",
            "s",
            [(_quantile(0.95, "noetl_control_api_request_duration_seconds", "route"), "{{route}}")],
        ),
        (
            "Worker commands in flight",
            "short",
            [("sum by (pool) (noetl_system_worker_in_flight)", "{{pool}}")],
        ),
    ]
    panels = [
        _panel(i + 1, title, unit, targets, x=(i % 2) * 12, y=(i // 2) * 8)
        for i, (title, unit, targets) in enumerate(rows)
    ]
    return {
        "uid": DASHBOARD_UID,
        "title": "NoETL control plane",
        "tags": ["noetl"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "panels": panels,
    }


def render_dashboard() -> str:
    return json.dumps(build_dashboard(), indent=2, sort_keys=False) + "\n"
