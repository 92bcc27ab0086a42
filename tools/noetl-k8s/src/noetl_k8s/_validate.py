"""Offline validation: Kubernetes and KEDA schemas, then the rules schemas cannot express.

* Built-in kinds are validated with ``kubernetes-validate`` against the strict schemas of
  :data:`K8S_VERSION` (unknown fields are errors, as with ``kubectl --validate=strict``).
* ``ScaledObject`` is validated with ``jsonschema`` against the vendored KEDA CRD schema,
  made strict the same way (objects with declared properties reject unknown ones).
* :func:`lint_documents` then checks one rendered tree as a whole: references between
  objects, the scaling contract, security settings, least-privilege RBAC, that each
  service gets only its own token, and that the NetworkPolicies deny by default, admit no
  source wholesale and still let the suite's own traffic through.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any

import jsonschema
import kubernetes_validate

from ._netpol import ingress_allowed, pods_of, selector_matches
from ._objects import CONTROL_API_NAME, OUTBOX_PUBLISHER_NAME, POOL_LABEL, PROJECTOR_NAME, Manifest
from ._spec import (
    ADMIN_TOKEN,
    API_TOKEN,
    CONTROL_API_PORT,
    PROJECTOR_TOKEN,
    PUBLISHER_TOKEN,
    worker_token_key,
)

K8S_VERSION = "1.30"
KEDA_SCHEMA_FILE = "keda-scaledobject-v1alpha1.json"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_POSITIVE_INT = re.compile(r"^[1-9][0-9]*$")
_NON_NEGATIVE_INT = re.compile(r"^(0|[1-9][0-9]*)$")
_NATS_JETSTREAM_REQUIRED = ("natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold")


def _strict(schema: Any) -> Any:
    """Copy of an OpenAPI schema where objects with ``properties`` reject unknown keys."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@cache
def keda_schema() -> dict[str, Any]:
    raw = resources.files("noetl_k8s").joinpath("schemas", KEDA_SCHEMA_FILE).read_text()
    return dict(_strict(json.loads(raw)["openAPIV3Schema"]))


def _keda_errors(doc: Manifest) -> list[str]:
    validator = jsonschema.Draft7Validator(keda_schema())
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}" for e in errors]


def _describe(doc: Any) -> str:
    if not isinstance(doc, dict):
        return "<not a mapping>"
    name = (doc.get("metadata") or {}).get("name", "?") if isinstance(doc.get("metadata"), dict) else "?"
    return f"{doc.get('kind', '?')}/{name}"


def validate_manifest(doc: Any, k8s_version: str = K8S_VERSION) -> list[str]:
    """Schema errors of one manifest (empty when it is valid)."""
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return [f"{_describe(doc)}: not a Kubernetes object (apiVersion and kind are required)"]
    where = _describe(doc)
    if doc["kind"] == "ScaledObject":
        if doc["apiVersion"] != "keda.sh/v1alpha1":
            return [f"{where}: unsupported apiVersion {doc['apiVersion']!r}"]
        return [f"{where}: {msg}" for msg in _keda_errors(doc)]
    try:
        kubernetes_validate.validate(copy.deepcopy(doc), k8s_version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "<root>"
        return [f"{where}: {path}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError as exc:
        return [f"{where}: {exc.message}"]
    return []


# --- whole-tree rules -----------------------------------------------------------------


def _pod_spec(doc: Manifest) -> dict[str, Any] | None:
    if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        spec: dict[str, Any] = doc.get("spec", {}).get("template", {}).get("spec", {})
        return spec
    return None


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def _by_kind(docs: Iterable[Manifest], kind: str) -> dict[str, Manifest]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def _lint_scaling(docs: list[Manifest]) -> list[str]:
    problems: list[str] = []
    deployments = _by_kind(docs, "Deployment")
    scaled: set[str] = set()
    for so in _by_kind(docs, "ScaledObject").values():
        where = _describe(so)
        spec = so.get("spec", {})
        target = spec.get("scaleTargetRef", {}).get("name")
        if target not in deployments:
            problems.append(f"{where}: scaleTargetRef names no Deployment in the tree ({target!r})")
            continue
        scaled.add(target)
        low, high = spec.get("minReplicaCount", 0), spec.get("maxReplicaCount", 100)
        if isinstance(low, int) and isinstance(high, int) and low > high:
            problems.append(f"{where}: minReplicaCount {low} > maxReplicaCount {high}")
        containers = _pod_spec(deployments[target]) or {}
        env = _env((containers.get("containers") or [{}])[0])
        for trigger in spec.get("triggers", []):
            if trigger.get("type") != "nats-jetstream":
                problems.append(f"{where}: trigger type {trigger.get('type')!r} is not nats-jetstream")
                continue
            meta = trigger.get("metadata", {})
            for key in _NATS_JETSTREAM_REQUIRED:
                if key not in meta:
                    problems.append(f"{where}: nats-jetstream trigger lacks {key}")
            if "lagThreshold" in meta and not _POSITIVE_INT.match(str(meta["lagThreshold"])):
                problems.append(
                    f"{where}: lagThreshold must be a positive integer, got {meta['lagThreshold']!r}"
                )
            act = meta.get("activationLagThreshold")
            if act is not None and not _NON_NEGATIVE_INT.match(str(act)):
                problems.append(
                    f"{where}: activationLagThreshold must be a non-negative integer, got {act!r}"
                )
            for key, var in (("consumer", "NATS_CONSUMER"), ("stream", "NATS_STREAM")):
                value = env.get(var, {}).get("value")
                if key in meta and meta[key] != value:
                    problems.append(f"{where}: trigger {key} {meta[key]!r} != {target} {var} {value!r}")
    for hpa in _by_kind(docs, "HorizontalPodAutoscaler").values():
        scaled.add(hpa.get("spec", {}).get("scaleTargetRef", {}).get("name", ""))
    for name in sorted(scaled & deployments.keys()):
        if "replicas" in deployments[name].get("spec", {}):
            problems.append(f"Deployment/{name}: sets spec.replicas although an autoscaler owns it")
    return problems


def _lint_pods(docs: list[Manifest]) -> list[str]:
    problems: list[str] = []
    secrets = _by_kind(docs, "Secret")
    accounts = _by_kind(docs, "ServiceAccount")
    for doc in docs:
        pod = _pod_spec(doc)
        if pod is None:
            continue
        where = _describe(doc)
        selector = doc.get("spec", {}).get("selector", {}).get("matchLabels", {})
        labels = doc["spec"].get("template", {}).get("metadata", {}).get("labels", {})
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            problems.append(f"{where}: selector.matchLabels does not match the pod template labels")
        for spread in pod.get("topologySpreadConstraints", []):
            wanted = spread.get("labelSelector", {}).get("matchLabels", {})
            if any(labels.get(k) != v for k, v in wanted.items()):
                problems.append(f"{where}: topologySpreadConstraints select other pods than its own")
        dev = labels.get("app.kubernetes.io/component") == "dev-infra"
        account = pod.get("serviceAccountName")
        if not dev and account not in accounts:
            problems.append(f"{where}: serviceAccountName {account!r} is not defined in the tree")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: mounts a ServiceAccount token it does not need")
        if not pod.get("securityContext", {}).get("runAsNonRoot"):
            problems.append(f"{where}: pod securityContext.runAsNonRoot is not true")
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            cwhere = f"{where} container {container.get('name')}"
            res = container.get("resources", {})
            if not res.get("requests") or not res.get("limits"):
                problems.append(f"{cwhere}: needs resource requests and limits")
            sc = container.get("securityContext", {})
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cwhere}: allowPrivilegeEscalation must be false")
            if not dev and sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cwhere}: readOnlyRootFilesystem must be true")
            for mount in container.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    problems.append(f"{cwhere}: mounts undefined volume {mount['name']!r}")
            ports = {p.get("name") for p in container.get("ports", [])}
            for probe in ("livenessProbe", "readinessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problems.append(f"{cwhere}: {probe} uses unnamed port {port!r}")
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is None:
                    continue
                secret = secrets.get(ref["name"])
                keys = set((secret or {}).get("stringData", {})) | set((secret or {}).get("data", {}))
                if ref["key"] not in keys:
                    problems.append(
                        f"{cwhere}: env {var['name']} reads missing secret key {ref['name']}/{ref['key']}"
                    )
    return problems


def _lint_shards(docs: list[Manifest]) -> list[str]:
    """The projector's replica count, its shard count and the control-api's must agree."""
    problems: list[str] = []
    projector = _by_kind(docs, "StatefulSet").get("noetl-projector")
    if projector is None:
        return problems
    replicas = projector["spec"].get("replicas")
    for doc in docs:
        pod = _pod_spec(doc)
        for container in (pod or {}).get("containers", []):
            value = _env(container).get("NOETL_EVENT_SHARD_COUNT", {}).get("value")
            if value is not None and value != str(replicas):
                problems.append(
                    f"{_describe(doc)}: NOETL_EVENT_SHARD_COUNT {value} != projector replicas {replicas}"
                )
    return problems


def _lint_rbac(docs: list[Manifest]) -> list[str]:
    problems: list[str] = []
    for doc in docs:
        where = _describe(doc)
        if doc.get("kind") in ("ClusterRole", "ClusterRoleBinding"):
            problems.append(f"{where}: cluster-wide RBAC is not allowed; use a namespaced Role")
        if doc.get("kind") != "Role":
            continue
        for rule in doc.get("rules") or []:
            for field in ("verbs", "resources", "apiGroups"):
                if "*" in rule.get(field, []):
                    problems.append(f"{where}: wildcard in {field}")
            if "secrets" in rule.get("resources", []):
                problems.append(f"{where}: grants access to Secrets")
    return problems


_RETIRED_TOKEN = "NOETL_INTERNAL_API_TOKEN"


def _is_token_key(key: str) -> bool:
    return key in (ADMIN_TOKEN, PUBLISHER_TOKEN, PROJECTOR_TOKEN) or key.startswith("NOETL_WORKER_TOKEN_")


def _own_token_key(doc: Manifest) -> str | None:
    """The Secret key a workload's NOETL_API_TOKEN must come from (None: it gets no token)."""
    name = doc["metadata"]["name"]
    pool = doc["spec"].get("template", {}).get("metadata", {}).get("labels", {}).get(POOL_LABEL)
    if pool is not None:
        return worker_token_key(pool)
    return {OUTBOX_PUBLISHER_NAME: PUBLISHER_TOKEN, PROJECTOR_NAME: PROJECTOR_TOKEN}.get(name)


def _lint_tokens(docs: list[Manifest]) -> list[str]:
    """Each service sees only its own token (docs/security.md §2); the control-api sees all."""
    problems: list[str] = []
    for secret in _by_kind(docs, "Secret").values():
        if _RETIRED_TOKEN in {**secret.get("stringData", {}), **secret.get("data", {})}:
            problems.append(
                f"{_describe(secret)}: holds {_RETIRED_TOKEN}, which is gone (docs/security.md §2)"
            )
    for doc in docs:
        pod = _pod_spec(doc)
        if pod is None:
            continue
        for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
            cwhere = f"{_describe(doc)} container {container.get('name')}"
            the_api = doc["metadata"]["name"] == CONTROL_API_NAME and container.get("name") == "control-api"
            if any("secretRef" in source for source in container.get("envFrom", [])):
                problems.append(
                    f"{cwhere}: envFrom a Secret hands it every key, other roles' tokens included"
                )
            for var in container.get("env", []):
                if var["name"] == _RETIRED_TOKEN:
                    problems.append(
                        f"{cwhere}: sets {_RETIRED_TOKEN}, which is gone; the control-api refuses to start with it"
                    )
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref is None or not _is_token_key(ref["key"]):
                    continue
                if the_api and var["name"] == ref["key"]:
                    continue
                if not the_api and var["name"] == API_TOKEN and ref["key"] == _own_token_key(doc):
                    continue
                problems.append(
                    f"{cwhere}: env {var['name']} reads {ref['key']}; a service gets only its own token, "
                    f"as {API_TOKEN} (the control-api: each under its own name)"
                )
    return problems


def _admits_everything(peer: dict[str, Any]) -> bool:
    if "ipBlock" in peer:
        return str(peer["ipBlock"].get("cidr")) in ("0.0.0.0/0", "::/0")
    namespaces = peer.get("namespaceSelector")
    pods = peer.get("podSelector")
    # An empty selector matches everything; a namespaceSelector {} spans the whole cluster.
    return namespaces is not None and not namespaces and not pods


def _is_default_deny(policy: Manifest) -> bool:
    spec = policy.get("spec", {})
    return (
        not spec.get("podSelector") and "Ingress" in spec.get("policyTypes", []) and not spec.get("ingress")
    )


def _lint_network(docs: list[Manifest]) -> list[str]:
    policies = list(_by_kind(docs, "NetworkPolicy").values())
    if not policies:
        return []
    problems: list[str] = []
    pods = pods_of(docs)
    for policy in policies:
        where = _describe(policy)
        spec = policy.get("spec", {})
        selector = spec.get("podSelector") or {}
        if selector and not any(selector_matches(selector, pod.labels) for pod in pods.values()):
            problems.append(f"{where}: podSelector selects no pod of the tree")
        for i, rule in enumerate(spec.get("ingress") or []):
            if not rule.get("from"):
                problems.append(f"{where}: ingress rule {i} has no 'from', so it admits every source")
            if not rule.get("ports"):
                problems.append(f"{where}: ingress rule {i} has no 'ports', so it opens every port")
            for peer in rule.get("from") or []:
                if _admits_everything(peer):
                    problems.append(f"{where}: ingress rule {i} has a peer that admits every source {peer}")
    if not any(_is_default_deny(p) for p in policies):
        problems.append("NetworkPolicy: no default-deny ingress policy (podSelector {}, no rules)")
    # The suite's own traffic must still flow.
    clients = [
        n
        for n, pod in pods.items()
        if n in (OUTBOX_PUBLISHER_NAME, PROJECTOR_NAME) or POOL_LABEL in pod.labels
    ]
    needed = [(client, CONTROL_API_NAME, CONTROL_API_PORT) for client in clients]
    needed += [(client, "nats", 4222) for client in clients]
    needed.append((CONTROL_API_NAME, "postgres", 5432))
    for source, dest, port in needed:
        if source in pods and dest in pods and not ingress_allowed(policies, pods[source], pods[dest], port):
            problems.append(f"NetworkPolicy: {source} cannot reach {dest}:{port}")
    return problems


def _lint_names(docs: list[Manifest]) -> list[str]:
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()
    for doc in docs:
        name = doc.get("metadata", {}).get("name", "")
        if not _NAME.match(name) or len(name) > 63:
            problems.append(f"{_describe(doc)}: name is not a DNS-1123 label")
        key = (doc.get("kind", ""), name)
        if key in seen:
            problems.append(f"{_describe(doc)}: defined twice")
        seen.add(key)
    return problems


def lint_documents(docs: list[Manifest]) -> list[str]:
    """Whole-tree rules over schema-valid manifests."""
    return [
        *_lint_names(docs),
        *_lint_scaling(docs),
        *_lint_pods(docs),
        *_lint_shards(docs),
        *_lint_rbac(docs),
        *_lint_tokens(docs),
        *_lint_network(docs),
    ]


def validate_documents(docs: list[Manifest], k8s_version: str = K8S_VERSION) -> list[str]:
    """Every schema error, then (if there are none) every lint problem."""
    errors = [msg for doc in docs for msg in validate_manifest(doc, k8s_version)]
    return errors or lint_documents(docs)
