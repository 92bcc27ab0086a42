"""Which pod may open a TCP connection to which, under a tree's NetworkPolicies (ingress only).

A small evaluator of the Kubernetes NetworkPolicy semantics the suite relies on, so that
the tests and :mod:`_validate` can check reachability offline:

* a pod that no policy selects (for ingress) accepts everything; a selected pod accepts a
  connection only if some rule of some selecting policy allows it (policies add up);
* a rule allows a source if any of its peers matches and the port is in its ``ports``
  (no ``from`` / no ``ports``: any source / any port);
* a peer with only ``podSelector`` means pods of the policy's own namespace, with only
  ``namespaceSelector`` every pod of the matching namespaces, with both the matching pods
  in the matching namespaces;
* ``ipBlock`` peers never match a pod here (pod addresses are not known offline).

Traffic from the node itself (kubelet probes) is always allowed by Kubernetes and is not
modelled.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Pod:
    """A pod as policies see it: its namespace (with labels), its labels, its named ports."""

    namespace: str
    labels: Mapping[str, str]
    namespace_labels: Mapping[str, str] = field(default_factory=dict)
    ports: Mapping[str, int] = field(default_factory=dict)

    def all_namespace_labels(self) -> dict[str, str]:
        # Kubernetes sets the name label on every namespace (>= 1.22).
        return {**self.namespace_labels, NAMESPACE_NAME_LABEL: self.namespace}


def selector_matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """A ``LabelSelector`` (``matchLabels`` and ``matchExpressions``); ``{}`` matches everything."""
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            raise ValueError(f"unknown selector operator {op!r}")
    return True


def _peer_matches(peer: Mapping[str, Any], policy_namespace: str, source: Pod) -> bool:
    if "ipBlock" in peer:
        return False
    namespaces = peer.get("namespaceSelector")
    if namespaces is None:
        in_namespace = source.namespace == policy_namespace
    else:
        in_namespace = selector_matches(namespaces, source.all_namespace_labels())
    return in_namespace and selector_matches(peer.get("podSelector"), source.labels)


def _port_matches(ports: list[Mapping[str, Any]] | None, dest: Pod, port: int) -> bool:
    if not ports:
        return True
    for entry in ports:
        if entry.get("protocol", "TCP") != "TCP":
            continue
        wanted = entry.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            wanted = dest.ports.get(wanted)
            if wanted is None:
                continue
        if int(wanted) <= port <= int(entry.get("endPort", wanted)):
            return True
    return False


def _selects_for_ingress(policy: Mapping[str, Any], dest: Pod) -> bool:
    spec = policy.get("spec") or {}
    types = spec.get("policyTypes") or ["Ingress"]
    return (
        policy.get("metadata", {}).get("namespace") == dest.namespace
        and "Ingress" in types
        and selector_matches(spec.get("podSelector") or {}, dest.labels)
    )


def ingress_allowed(policies: Iterable[Mapping[str, Any]], source: Pod, dest: Pod, port: int) -> bool:
    """Whether ``source`` may connect to ``dest`` on TCP ``port``."""
    selecting = [p for p in policies if p.get("kind") == "NetworkPolicy" and _selects_for_ingress(p, dest)]
    if not selecting:
        return True
    for policy in selecting:
        namespace = policy["metadata"]["namespace"]
        for rule in policy["spec"].get("ingress") or []:
            peers = rule.get("from")
            source_ok = not peers or any(_peer_matches(peer, namespace, source) for peer in peers)
            if source_ok and _port_matches(rule.get("ports"), dest, port):
                return True
    return False


def pods_of(docs: Iterable[Mapping[str, Any]]) -> dict[str, Pod]:
    """One :class:`Pod` per workload (Deployment, StatefulSet) of a rendered tree, by name."""
    docs = list(docs)
    namespace_labels = {
        d["metadata"]["name"]: dict(d["metadata"].get("labels") or {})
        for d in docs
        if d.get("kind") == "Namespace"
    }
    pods: dict[str, Pod] = {}
    for doc in docs:
        if doc.get("kind") not in ("Deployment", "StatefulSet"):
            continue
        template = doc["spec"]["template"]
        namespace = doc["metadata"].get("namespace", "default")
        ports = {
            p["name"]: int(p["containerPort"])
            for c in template["spec"].get("containers", [])
            for p in c.get("ports", [])
            if "name" in p
        }
        pods[doc["metadata"]["name"]] = Pod(
            namespace=namespace,
            labels=dict(template["metadata"].get("labels") or {}),
            namespace_labels=namespace_labels.get(namespace, {}),
            ports=ports,
        )
    return pods
