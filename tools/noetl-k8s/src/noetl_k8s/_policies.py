"""NetworkPolicies (docs/security.md §7): default-deny ingress, then what each workload accepts."""

from __future__ import annotations

from typing import Any

from ._dev_infra import NATS_CLIENT_PORT, NATS_MONITOR_PORT, POSTGRES_PORT
from ._objects import (
    CONTROL_API_NAME,
    OUTBOX_PUBLISHER_NAME,
    PART_OF,
    POOL_LABEL,
    PROJECTOR_NAME,
    Manifest,
    meta,
    selector,
)
from ._spec import (
    CONTROL_API,
    CONTROL_API_PORT,
    OUTBOX_PUBLISHER,
    PROJECTOR,
    PROJECTOR_METRICS_PORT,
    PUBLISHER_METRICS_PORT,
    WORKER_METRICS_PORT,
    Profile,
)

NETWORK_POLICY_API = "networking.k8s.io/v1"
DEFAULT_DENY_NAME = "noetl-default-deny-ingress"
WORKERS_POLICY_NAME = "noetl-workers"


def _pods_named(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": selector(name)}}


def _worker_pods() -> dict[str, Any]:
    """Every worker pod, of whichever pool: pools added later are covered without an edit."""
    return {
        "podSelector": {
            "matchLabels": {"app.kubernetes.io/part-of": PART_OF},
            "matchExpressions": [{"key": POOL_LABEL, "operator": "Exists"}],
        }
    }


def _namespace_named(namespace: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}


def _rule(peers: list[dict[str, Any]], port: int) -> dict[str, Any]:
    return {"from": peers, "ports": [{"port": port, "protocol": "TCP"}]}


def _suite_clients() -> list[dict[str, Any]]:
    """The suite's pods that call the control-api and use NATS: publisher, projector, workers."""
    return [_pods_named(OUTBOX_PUBLISHER_NAME), _pods_named(PROJECTOR_NAME), _worker_pods()]


def _network_policy(
    profile: Profile, name: str, component: str, pods: dict[str, Any], rules: list[dict[str, Any]]
) -> Manifest:
    return {
        "apiVersion": NETWORK_POLICY_API,
        "kind": "NetworkPolicy",
        "metadata": meta(profile, name, component),
        "spec": {"podSelector": pods, "policyTypes": ["Ingress"], "ingress": rules},
    }


def build_default_deny(profile: Profile) -> Manifest:
    """Every pod of the namespace refuses ingress unless another policy allows it."""
    return {
        "apiVersion": NETWORK_POLICY_API,
        "kind": "NetworkPolicy",
        "metadata": meta(profile, DEFAULT_DENY_NAME, "network"),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def _monitoring_rule(profile: Profile, port: int) -> list[dict[str, Any]]:
    namespace = profile.network.monitoring_namespace
    return [_rule([_namespace_named(namespace)], port)] if namespace else []


def build_control_api_policy(profile: Profile) -> Manifest:
    """The API port: the suite's clients, the configured client sources, the scraper."""
    rules = [_rule(_suite_clients(), CONTROL_API_PORT)]
    if profile.network.api_clients:
        rules.append(_rule([peer.to_k8s() for peer in profile.network.api_clients], CONTROL_API_PORT))
    rules += _monitoring_rule(profile, CONTROL_API_PORT)
    return _network_policy(
        profile, CONTROL_API_NAME, CONTROL_API, {"matchLabels": selector(CONTROL_API_NAME)}, rules
    )


def build_metrics_policies(profile: Profile) -> list[Manifest]:
    """The metrics ports of the publisher, the projector and the workers: the scraper only."""
    if not profile.network.monitoring_namespace:
        return []
    return [
        _network_policy(
            profile,
            OUTBOX_PUBLISHER_NAME,
            OUTBOX_PUBLISHER,
            {"matchLabels": selector(OUTBOX_PUBLISHER_NAME)},
            _monitoring_rule(profile, PUBLISHER_METRICS_PORT),
        ),
        _network_policy(
            profile,
            PROJECTOR_NAME,
            PROJECTOR,
            {"matchLabels": selector(PROJECTOR_NAME)},
            _monitoring_rule(profile, PROJECTOR_METRICS_PORT),
        ),
        _network_policy(
            profile,
            WORKERS_POLICY_NAME,
            "worker",
            _worker_pods()["podSelector"],
            _monitoring_rule(profile, WORKER_METRICS_PORT),
        ),
    ]


def build_network_policies(profile: Profile) -> list[Manifest]:
    """Default-deny ingress, then what each of the suite's workloads must accept."""
    return [build_default_deny(profile), build_control_api_policy(profile), *build_metrics_policies(profile)]


def build_dev_infra_policies(profile: Profile) -> list[Manifest]:
    """The in-cluster Postgres (control-api only) and NATS (its clients; KEDA on monitoring)."""
    return [
        _network_policy(
            profile,
            "postgres",
            "dev-infra",
            {"matchLabels": selector("postgres")},
            [_rule([_pods_named(CONTROL_API_NAME)], POSTGRES_PORT)],
        ),
        _network_policy(
            profile,
            "nats",
            "dev-infra",
            {"matchLabels": selector("nats")},
            [
                _rule(_suite_clients(), NATS_CLIENT_PORT),
                # The ScaledObjects' nats-jetstream scaler reads consumer lag from here.
                _rule([_namespace_named(profile.network.keda_namespace)], NATS_MONITOR_PORT),
            ],
        ),
    ]
