"""The NetworkPolicies of docs/security.md §7: who reaches what, evaluated offline."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest
from noetl_k8s import PROFILES, NetworkPeer, build_manifests, ingress_controller, kind_profile, lint_documents
from noetl_k8s._netpol import Pod, ingress_allowed, pods_of, selector_matches

Doc = dict[str, Any]
NS = "kubernetes.io/metadata.name"


def _docs(profile: str = "kind") -> list[Doc]:
    return [d for docs in build_manifests(PROFILES[profile]()).values() for d in docs]


def _policies(docs: list[Doc]) -> list[Doc]:
    return [d for d in docs if d["kind"] == "NetworkPolicy"]


def _stranger(namespace: str = "noetl", labels: dict[str, str] | None = None) -> Pod:
    return Pod(namespace=namespace, labels=labels or {"app": "debug-shell"})


# Every connection the suite makes, and a sample of those it must not be able to make.
SUITE = ["noetl-outbox-publisher", "noetl-projector", "noetl-worker-shared", "noetl-worker-system"]
ALLOWED = [
    *[(client, "noetl-control-api", 8082) for client in SUITE],
    *[(client, "nats", 4222) for client in SUITE],
    ("noetl-control-api", "postgres", 5432),
]
DENIED = [
    *[(client, "postgres", 5432) for client in SUITE],
    ("noetl-control-api", "nats", 4222),  # the control-api never talks to NATS
    *[(client, "nats", 8222) for client in SUITE],  # monitoring is KEDA's
    ("noetl-worker-shared", "noetl-worker-system", 9090),
    ("noetl-worker-shared", "noetl-outbox-publisher", 9091),
    ("noetl-worker-system", "noetl-projector", 9092),
    ("noetl-control-api", "noetl-worker-shared", 9090),
    ("noetl-worker-shared", "noetl-control-api", 9999),  # only the API port is open
]


@pytest.mark.parametrize(("source", "dest", "port"), ALLOWED)
def test_the_suites_own_traffic_is_allowed(source: str, dest: str, port: int) -> None:
    docs = _docs()
    pods = pods_of(docs)
    assert ingress_allowed(_policies(docs), pods[source], pods[dest], port)


@pytest.mark.parametrize(("source", "dest", "port"), DENIED)
def test_traffic_the_suite_does_not_need_is_denied(source: str, dest: str, port: int) -> None:
    docs = _docs()
    pods = pods_of(docs)
    assert not ingress_allowed(_policies(docs), pods[source], pods[dest], port)
    # Without the policies the same connection would go through: the policies are what deny it.
    assert ingress_allowed([], pods[source], pods[dest], port)


@pytest.mark.parametrize(
    ("dest", "port"), [("noetl-control-api", 8082), ("postgres", 5432), ("nats", 4222), ("nats", 8222)]
)
def test_a_foreign_pod_reaches_nothing_in_the_namespace_or_from_outside(dest: str, port: int) -> None:
    docs = _docs()
    target = pods_of(docs)[dest]
    assert not ingress_allowed(_policies(docs), _stranger(), target, port)
    assert not ingress_allowed(_policies(docs), _stranger("default"), target, port)
    # A pod of another namespace dressed up with the suite's labels is still foreign.
    publisher = dict(pods_of(docs)["noetl-outbox-publisher"].labels)
    assert not ingress_allowed(_policies(docs), _stranger("default", publisher), target, port)


def test_keda_reads_the_nats_monitoring_port_and_nothing_else() -> None:
    docs = _docs()
    pods = pods_of(docs)
    keda = Pod(namespace="keda", labels={"app": "keda-operator"})
    assert ingress_allowed(_policies(docs), keda, pods["nats"], 8222)
    assert not ingress_allowed(_policies(docs), keda, pods["nats"], 4222)
    assert not ingress_allowed(_policies(docs), keda, pods["noetl-control-api"], 8082)


@pytest.mark.parametrize(
    ("dest", "port"),
    [
        ("noetl-control-api", 8082),
        ("noetl-outbox-publisher", 9091),
        ("noetl-projector", 9092),
        ("noetl-worker-shared", 9090),
        ("noetl-worker-system", 9090),
    ],
)
def test_the_monitoring_namespace_scrapes_every_metrics_port_and_only_those(dest: str, port: int) -> None:
    docs = _docs()
    pods = pods_of(docs)
    prometheus = Pod(namespace="monitoring", labels={"app": "prometheus"})
    assert ingress_allowed(_policies(docs), prometheus, pods[dest], port)
    assert not ingress_allowed(_policies(docs), prometheus, pods["postgres"], 5432)
    assert not ingress_allowed(_policies(docs), prometheus, pods["nats"], 4222)


def test_without_a_monitoring_namespace_nobody_scrapes() -> None:
    kind = kind_profile()
    profile = replace(kind, network=replace(kind.network, monitoring_namespace=""))
    docs = [d for ds in build_manifests(profile).values() for d in ds]
    pods = pods_of(docs)
    prometheus = Pod(namespace="monitoring", labels={"app": "prometheus"})
    for dest, port in (("noetl-control-api", 8082), ("noetl-worker-shared", 9090), ("noetl-projector", 9092)):
        assert not ingress_allowed(_policies(docs), prometheus, pods[dest], port)
    assert {d["metadata"]["name"] for d in _policies(docs)} == {
        "noetl-default-deny-ingress",
        "noetl-control-api",
        "postgres",
        "nats",
    }
    assert lint_documents(docs) == []


def test_an_ingress_controller_reaches_the_api_port_only() -> None:
    kind = kind_profile()
    nginx = ingress_controller("ingress-nginx", **{"app.kubernetes.io/name": "ingress-nginx"})
    profile = replace(kind, network=replace(kind.network, api_clients=(nginx,)))
    docs = [d for ds in build_manifests(profile).values() for d in ds]
    pods = pods_of(docs)
    controller = Pod(namespace="ingress-nginx", labels={"app.kubernetes.io/name": "ingress-nginx"})
    neighbour = Pod(namespace="ingress-nginx", labels={"app.kubernetes.io/name": "default-backend"})
    assert ingress_allowed(_policies(docs), controller, pods["noetl-control-api"], 8082)
    assert not ingress_allowed(_policies(docs), neighbour, pods["noetl-control-api"], 8082)
    assert not ingress_allowed(_policies(docs), controller, pods["postgres"], 5432)
    assert not ingress_allowed(_policies(docs), controller, pods["noetl-worker-shared"], 9090)
    # Not configured: the controller is refused like any other pod.
    assert not ingress_allowed(_policies(_docs()), controller, pods_of(_docs())["noetl-control-api"], 8082)


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_tree_denies_ingress_by_default(profile: str) -> None:
    (deny,) = [d for d in _policies(_docs(profile)) if d["metadata"]["name"] == "noetl-default-deny-ingress"]
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress"]}


def test_a_pool_added_later_is_covered_without_editing_the_policies() -> None:
    kind = kind_profile()
    python = replace(kind.pool("shared"), pool="python")
    profile = replace(
        kind,
        worker_pools=(*kind.worker_pools, python),
        secret_values=(*kind.secret_values, ("NOETL_WORKER_TOKEN_PYTHON", "t" * 40)),
    )
    docs = [d for ds in build_manifests(profile).values() for d in ds]
    pods = pods_of(docs)
    assert ingress_allowed(_policies(docs), pods["noetl-worker-python"], pods["noetl-control-api"], 8082)
    assert ingress_allowed(_policies(docs), pods["noetl-worker-python"], pods["nats"], 4222)
    assert not ingress_allowed(_policies(docs), pods["noetl-worker-python"], pods["postgres"], 5432)


# --- broken policies are caught -------------------------------------------------------


def _policy(docs: list[Doc], name: str) -> Doc:
    (found,) = [d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name]
    return found


def test_dropping_the_default_deny_is_caught() -> None:
    docs = [d for d in _docs() if d["metadata"]["name"] != "noetl-default-deny-ingress"]
    assert lint_documents(docs) == [
        "NetworkPolicy: no default-deny ingress policy (podSelector {}, no rules)"
    ]


def test_a_policy_that_forgets_the_workers_is_caught() -> None:
    docs = copy.deepcopy(_docs())
    _policy(docs, "noetl-control-api")["spec"]["ingress"][0]["from"].pop()
    assert lint_documents(docs) == [
        "NetworkPolicy: noetl-worker-shared cannot reach noetl-control-api:8082",
        "NetworkPolicy: noetl-worker-system cannot reach noetl-control-api:8082",
    ]


def test_postgres_closed_to_the_control_api_is_caught() -> None:
    docs = copy.deepcopy(_docs())
    _policy(docs, "postgres")["spec"]["ingress"][0]["ports"][0]["port"] = 5433
    assert lint_documents(docs) == ["NetworkPolicy: noetl-control-api cannot reach postgres:5432"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda rule: rule.pop("from"), "has no 'from', so it admits every source"),
        (lambda rule: rule.pop("ports"), "has no 'ports', so it opens every port"),
        (lambda rule: rule["from"].append({"namespaceSelector": {}}), "a peer that admits every source"),
        (
            lambda rule: rule["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}),
            "a peer that admits every source",
        ),
    ],
    ids=["no-from", "no-ports", "all-namespaces", "all-addresses"],
)
def test_a_rule_that_opens_the_api_wholesale_is_caught(change: Any, expected: str) -> None:
    docs = copy.deepcopy(_docs())
    change(_policy(docs, "noetl-control-api")["spec"]["ingress"][0])
    (problem,) = lint_documents(docs)
    assert problem.startswith("NetworkPolicy/noetl-control-api: ingress rule 0") and expected in problem


def test_a_policy_selecting_no_pod_is_caught() -> None:
    docs = copy.deepcopy(_docs())
    _policy(docs, "noetl-projector")["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] = (
        "projector"
    )
    assert lint_documents(docs) == ["NetworkPolicy/noetl-projector: podSelector selects no pod of the tree"]


def test_a_peer_must_name_what_it_admits() -> None:
    with pytest.raises(ValueError, match="needs a namespace or pod selector"):
        NetworkPeer()
    with pytest.raises(ValueError, match="not both"):
        NetworkPeer(cidr="10.0.0.0/8", pods=())
    assert NetworkPeer(namespace=(), pods=(("a", "b"),)).to_k8s() == {
        "namespaceSelector": {},
        "podSelector": {"matchLabels": {"a": "b"}},
    }


# --- the evaluator follows Kubernetes' semantics --------------------------------------


def test_selector_operators() -> None:
    labels = {"app": "x", "tier": "api"}
    assert selector_matches({}, labels)
    assert selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["api"]}]}, labels
    )
    assert not selector_matches(
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["api"]}]}, labels
    )
    assert selector_matches(
        {"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}, labels
    )
    assert not selector_matches({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}, labels)
    assert selector_matches({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}, labels)
    assert not selector_matches({"matchLabels": {"app": "x", "tier": "db"}}, labels)


def _allow(peers: list[Doc], ports: list[Doc] | None = None) -> list[Doc]:
    rule: Doc = {"from": peers}
    if ports is not None:
        rule["ports"] = ports
    spec = {"podSelector": {"matchLabels": {"app": "db"}}, "policyTypes": ["Ingress"], "ingress": [rule]}
    return [{"kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "ns"}, "spec": spec}]


def test_namespace_and_pod_selectors_in_one_peer_both_apply_in_two_peers_either() -> None:
    db = Pod(namespace="ns", labels={"app": "db"})
    web_elsewhere = Pod(namespace="other", labels={"app": "web"})
    any_elsewhere = Pod(namespace="other", labels={"app": "batch"})
    web_here = Pod(namespace="ns", labels={"app": "web"})
    both = _allow(
        [
            {
                "namespaceSelector": {"matchLabels": {NS: "other"}},
                "podSelector": {"matchLabels": {"app": "web"}},
            }
        ]
    )
    assert ingress_allowed(both, web_elsewhere, db, 1)
    assert not ingress_allowed(both, any_elsewhere, db, 1)
    assert not ingress_allowed(both, web_here, db, 1)
    either = _allow(
        [
            {"namespaceSelector": {"matchLabels": {NS: "other"}}},
            {"podSelector": {"matchLabels": {"app": "web"}}},
        ]
    )
    assert ingress_allowed(either, any_elsewhere, db, 1)
    assert ingress_allowed(either, web_here, db, 1)
    # A pod selector alone means the policy's own namespace.
    assert not ingress_allowed(
        _allow([{"podSelector": {"matchLabels": {"app": "web"}}}]), web_elsewhere, db, 1
    )


def test_ports_named_ranged_and_unselected_pods() -> None:
    db = Pod(namespace="ns", labels={"app": "db"}, ports={"sql": 5432})
    web = Pod(namespace="ns", labels={"app": "web"})
    peers: list[Doc] = [{"podSelector": {}}]
    assert ingress_allowed(_allow(peers, [{"port": "sql"}]), web, db, 5432)
    assert not ingress_allowed(_allow(peers, [{"port": "sql"}]), web, db, 5433)
    assert ingress_allowed(_allow(peers, [{"port": 9000, "endPort": 9010}]), web, db, 9005)
    assert not ingress_allowed(_allow(peers, [{"port": 5432, "protocol": "UDP"}]), web, db, 5432)
    # A pod no policy selects accepts everything.
    assert ingress_allowed(_allow([]), db, web, 1)
