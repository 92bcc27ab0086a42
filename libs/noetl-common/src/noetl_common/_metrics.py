"""prometheus-client helpers: every metric is named ``noetl_<service>_<name>``."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def metric_name(service: str, name: str) -> str:
    return f"noetl_{service.replace('-', '_')}_{name}"


def counter(service: str, name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
    return Counter(metric_name(service, name), doc, list(labels))


def gauge(service: str, name: str, doc: str, labels: Sequence[str] = ()) -> Gauge:
    return Gauge(metric_name(service, name), doc, list(labels))


def histogram(
    service: str, name: str, doc: str, labels: Sequence[str] = (), buckets: Sequence[float] = LATENCY_BUCKETS
) -> Histogram:
    return Histogram(metric_name(service, name), doc, list(labels), buckets=list(buckets))
