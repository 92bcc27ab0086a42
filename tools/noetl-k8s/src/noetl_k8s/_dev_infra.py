"""The in-cluster Postgres and NATS of the kind overlay, for end-to-end runs only."""

from __future__ import annotations

from ._env import EnvVar
from ._objects import Manifest, labels, meta, requests_and_limits, selector
from ._spec import RUN_AS_USER, Profile, Resources

NATS_CLIENT_PORT = 4222
NATS_MONITOR_PORT = 8222
POSTGRES_PORT = 5432


def _dev_statefulset(
    profile: Profile,
    name: str,
    *,
    image: str,
    args: list[str],
    env: list[EnvVar],
    ports: list[tuple[str, int]],
    data_path: str,
    run_as: int,
    probe_port: str,
) -> Manifest:
    container = {
        "name": name,
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "args": args,
        "env": env,
        "ports": [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports],
        "readinessProbe": {"tcpSocket": {"port": probe_port}, "periodSeconds": 2},
        "resources": requests_and_limits(
            Resources(cpu_request="50m", memory_request="128Mi", cpu_limit="1", memory_limit="512Mi")
        ),
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "data", "mountPath": data_path}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(profile, name, "dev-infra"),
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": selector(name)},
            "template": {
                "metadata": {"labels": labels(name, "dev-infra")},
                "spec": {
                    "automountServiceAccountToken": False,
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": run_as,
                        "runAsGroup": run_as,
                        "fsGroup": run_as,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "containers": [container],
                    # Throwaway state: an e2e run starts from empty stores.
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def _dev_service(profile: Profile, name: str, ports: list[tuple[str, int]]) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(profile, name, "dev-infra"),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(name),
            "ports": [{"name": n, "port": p, "targetPort": n, "protocol": "TCP"} for n, p in ports],
        },
    }


def build_dev_infra(profile: Profile) -> list[Manifest]:
    """Postgres and NATS (JetStream, monitoring on 8222) for end-to-end runs on kind."""
    pg_ports = [("postgres", POSTGRES_PORT)]
    nats_ports = [("client", NATS_CLIENT_PORT), ("monitor", NATS_MONITOR_PORT)]
    return [
        _dev_service(profile, "postgres", pg_ports),
        _dev_statefulset(
            profile,
            "postgres",
            image="postgres:16-alpine",
            args=[],
            env=[
                {"name": "POSTGRES_USER", "value": "noetl"},
                {"name": "POSTGRES_DB", "value": "noetl"},
                {"name": "POSTGRES_PASSWORD", "value": "noetl-kind-only"},
                {"name": "PGDATA", "value": "/var/lib/postgresql/data/pgdata"},
            ],
            ports=pg_ports,
            data_path="/var/lib/postgresql/data",
            run_as=70,  # the postgres user of the alpine image
            probe_port="postgres",
        ),
        _dev_service(profile, "nats", nats_ports),
        _dev_statefulset(
            profile,
            "nats",
            image="nats:2.10-alpine",
            args=["-js", "-sd", "/data", "-m", "8222"],
            env=[],
            ports=nats_ports,
            data_path="/data",
            run_as=RUN_AS_USER,
            probe_port="client",
        ),
    ]
