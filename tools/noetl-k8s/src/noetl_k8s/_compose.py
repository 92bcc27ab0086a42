"""compose.yaml and the Kubernetes manifests must configure each service with the same names."""

from __future__ import annotations

from typing import Any

import yaml

from ._env import COMPOSE_ONLY, K8S_EXPLICIT, env_names
from ._objects import Manifest

#: compose service → (kind, object name, container name) of its Kubernetes counterpart.
COMPOSE_TO_K8S: dict[str, tuple[str, str, str]] = {
    "migrate": ("Deployment", "noetl-control-api", "migrate"),
    "control-api": ("Deployment", "noetl-control-api", "control-api"),
    "outbox-publisher": ("Deployment", "noetl-outbox-publisher", "outbox-publisher"),
    "projector": ("StatefulSet", "noetl-projector", "projector"),
    "worker-shared": ("Deployment", "noetl-worker-shared", "worker"),
    "worker-system": ("Deployment", "noetl-worker-system", "worker"),
}


def compose_env(text: str) -> dict[str, set[str]]:
    """Env var names per compose service (``<<`` merges resolved, list or map form)."""
    doc = yaml.safe_load(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
        raise ValueError("compose file has no services mapping")
    out: dict[str, set[str]] = {}
    for name, service in doc["services"].items():
        env: Any = (service or {}).get("environment") or {}
        if isinstance(env, list):
            out[name] = {str(item).split("=", 1)[0] for item in env}
        else:
            out[name] = {str(key) for key in env}
    return out


def k8s_env(docs: list[Manifest]) -> dict[str, set[str]]:
    """Env var names per compose service name, read from rendered manifests."""
    out: dict[str, set[str]] = {}
    for service, (kind, name, container) in COMPOSE_TO_K8S.items():
        for doc in docs:
            if doc.get("kind") != kind or doc["metadata"]["name"] != name:
                continue
            pod = doc["spec"]["template"]["spec"]
            for c in [*pod.get("initContainers", []), *pod.get("containers", [])]:
                if c["name"] == container:
                    out[service] = set(env_names(c.get("env", [])))
    return out


def compare_env(compose: dict[str, set[str]], k8s: dict[str, set[str]]) -> list[str]:
    """Differences that neither :data:`K8S_EXPLICIT` nor :data:`COMPOSE_ONLY` explains."""
    problems: list[str] = []
    for service in sorted(COMPOSE_TO_K8S):
        if service not in compose:
            problems.append(f"compose.yaml has no service {service!r}")
            continue
        if service not in k8s:
            problems.append(f"the manifests have no container for compose service {service!r}")
            continue
        only_compose = compose[service] - k8s[service] - COMPOSE_ONLY.keys()
        only_k8s = k8s[service] - compose[service] - K8S_EXPLICIT.keys()
        if only_compose:
            problems.append(f"{service}: set in compose.yaml only: {sorted(only_compose)}")
        if only_k8s:
            problems.append(f"{service}: set in the manifests only: {sorted(only_k8s)}")
    return problems
