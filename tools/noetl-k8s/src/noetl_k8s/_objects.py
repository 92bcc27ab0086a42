"""The building blocks every manifest is made of: names, labels, metadata, pods and containers.

Everything here is pure: plain dicts in the shape ``kubectl apply`` takes.
"""

from __future__ import annotations

from typing import Any

from ._env import EnvVar
from ._spec import RUN_AS_USER, Profile, Resources

Manifest = dict[str, Any]

PART_OF = "noetl"
#: Label every worker pod carries with its pool's name.
POOL_LABEL = "noetl.io/pool"

#: Object names of the suite's workloads (a worker pool's is ``WorkerPoolSpec.name``).
CONTROL_API_NAME = "noetl-control-api"
OUTBOX_PUBLISHER_NAME = "noetl-outbox-publisher"
PROJECTOR_NAME = "noetl-projector"

TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
    }


def selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def meta(profile: Profile, name: str, component: str, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "namespace": profile.namespace, "labels": labels(name, component)}
    out.update(extra)
    return out


def requests_and_limits(res: Resources) -> dict[str, Any]:
    return {
        "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
        "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit},
    }


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _scrape_annotations(port: int) -> dict[str, str]:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS_USER,
        "runAsGroup": RUN_AS_USER,
        "fsGroup": RUN_AS_USER,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _probes(port: str) -> dict[str, Any]:
    return {
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": port},
            "periodSeconds": 10,
            "timeoutSeconds": 2,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": port},
            "periodSeconds": 5,
            "timeoutSeconds": 2,
            "failureThreshold": 2,
        },
    }


def _spread(name: str) -> list[dict[str, Any]]:
    """Prefer replicas on different nodes and zones; never block scheduling for it."""
    return [
        {
            "maxSkew": 1,
            "topologyKey": key,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": selector(name)},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


def container(
    *,
    name: str,
    image: str,
    pull_policy: str,
    command: list[str],
    env: list[EnvVar],
    port_name: str,
    port: int,
    resources: Resources,
    mounts: list[dict[str, Any]],
) -> dict[str, Any]:
    """A suite container: one port, health probes on it, read-only root, no capabilities."""
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": command,
        "env": env,
        "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}],
        **_probes(port_name),
        "resources": requests_and_limits(resources),
        "securityContext": container_security(),
        "volumeMounts": mounts,
    }


def pod_template(
    name: str,
    component: str,
    *,
    service_account: str,
    containers: list[dict[str, Any]],
    volumes: list[dict[str, Any]],
    scrape_port: int,
    init_containers: list[dict[str, Any]] | None = None,
    grace_seconds: int = 30,
) -> dict[str, Any]:
    """A suite pod: non-root, spread over nodes and zones, scraped on ``scrape_port``."""
    spec: dict[str, Any] = {
        "serviceAccountName": service_account,
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(),
        "terminationGracePeriodSeconds": grace_seconds,
        "topologySpreadConstraints": _spread(name),
    }
    if init_containers:
        spec["initContainers"] = init_containers
    spec["containers"] = containers
    spec["volumes"] = volumes
    return {
        "metadata": {"labels": labels(name, component), "annotations": _scrape_annotations(scrape_port)},
        "spec": spec,
    }
