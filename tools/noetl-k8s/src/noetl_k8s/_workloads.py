"""The suite's workloads: the control-api, the outbox-publisher, the projector and the worker
pools, each with its Service, autoscaler or ScaledObject."""

from __future__ import annotations

from typing import Any

from ._cluster import service_account_name
from ._env import (
    WASM_CACHE_MOUNT,
    control_api_env,
    migrate_env,
    outbox_publisher_env,
    projector_env,
    worker_env,
)
from ._objects import (
    CONTROL_API_NAME,
    OUTBOX_PUBLISHER_NAME,
    POOL_LABEL,
    PROJECTOR_NAME,
    TMP_MOUNT,
    TMP_VOLUME,
    Manifest,
    container,
    container_security,
    meta,
    pod_template,
    requests_and_limits,
    selector,
)
from ._spec import (
    COMMANDS_STREAM,
    CONTROL_API,
    CONTROL_API_PORT,
    OUTBOX_PUBLISHER,
    PROJECTOR,
    PROJECTOR_METRICS_PORT,
    PUBLISHER_METRICS_PORT,
    WORKER_METRICS_PORT,
    Profile,
    WorkerPoolSpec,
)

# --- control-api ----------------------------------------------------------------------


def build_control_api_deployment(profile: Profile) -> Manifest:
    spec = profile.control_api
    image = profile.images.ref("noetl-control-api")
    migrate = {
        "name": "migrate",
        "image": image,
        "imagePullPolicy": profile.images.pull_policy,
        # Runs before every pod start; migrations are idempotent and serialised by the
        # control-api with a Postgres advisory lock, so replicas starting together are safe.
        "command": ["noetl-control-api", "migrate"],
        "env": migrate_env(profile),
        "resources": requests_and_limits(spec.resources),
        "securityContext": container_security(),
        "volumeMounts": [TMP_MOUNT],
    }
    main = container(
        name="control-api",
        image=image,
        pull_policy=profile.images.pull_policy,
        command=["noetl-control-api", "serve"],
        env=control_api_env(profile),
        port_name="http",
        port=CONTROL_API_PORT,
        resources=spec.resources,
        mounts=[TMP_MOUNT],
    )
    deployment_spec: dict[str, Any] = {}
    if spec.autoscale is None:
        deployment_spec["replicas"] = spec.replicas
    deployment_spec.update(
        {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(CONTROL_API_NAME)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": pod_template(
                CONTROL_API_NAME,
                CONTROL_API,
                service_account=service_account_name(CONTROL_API),
                init_containers=[migrate],
                containers=[main],
                volumes=[TMP_VOLUME],
                scrape_port=CONTROL_API_PORT,
            ),
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(profile, CONTROL_API_NAME, CONTROL_API),
        "spec": deployment_spec,
    }


def build_control_api_service(profile: Profile) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(profile, CONTROL_API_NAME, CONTROL_API),
        "spec": {
            "type": "ClusterIP",
            "selector": selector(CONTROL_API_NAME),
            "ports": [{"name": "http", "port": CONTROL_API_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def build_control_api_hpa(profile: Profile) -> Manifest | None:
    spec = profile.control_api
    if spec.autoscale is None:
        return None
    low, high = spec.autoscale
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": meta(profile, CONTROL_API_NAME, CONTROL_API),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": CONTROL_API_NAME},
            "minReplicas": low,
            "maxReplicas": high,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {"type": "Utilization", "averageUtilization": spec.cpu_target_percent},
                    },
                }
            ],
        },
    }


# --- outbox-publisher and projector ---------------------------------------------------


def build_outbox_publisher_deployment(profile: Profile) -> Manifest:
    spec = profile.outbox_publisher
    main = container(
        name="outbox-publisher",
        image=profile.images.ref("noetl-outbox-publisher"),
        pull_policy=profile.images.pull_policy,
        command=["noetl-outbox-publisher"],
        env=outbox_publisher_env(profile),
        port_name="metrics",
        port=PUBLISHER_METRICS_PORT,
        resources=spec.resources,
        mounts=[TMP_MOUNT],
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(profile, OUTBOX_PUBLISHER_NAME, OUTBOX_PUBLISHER),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(OUTBOX_PUBLISHER_NAME)},
            "template": pod_template(
                OUTBOX_PUBLISHER_NAME,
                OUTBOX_PUBLISHER,
                service_account=service_account_name(OUTBOX_PUBLISHER),
                containers=[main],
                volumes=[TMP_VOLUME],
                scrape_port=PUBLISHER_METRICS_PORT,
            ),
        },
    }


def build_projector_service(profile: Profile) -> Manifest:
    """Headless Service the StatefulSet needs for stable pod names."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta(profile, PROJECTOR_NAME, PROJECTOR),
        "spec": {
            "clusterIP": "None",
            "selector": selector(PROJECTOR_NAME),
            "ports": [
                {
                    "name": "metrics",
                    "port": PROJECTOR_METRICS_PORT,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                }
            ],
        },
    }


def build_projector_statefulset(profile: Profile) -> Manifest:
    spec = profile.projector
    main = container(
        name="projector",
        image=profile.images.ref("noetl-projector"),
        pull_policy=profile.images.pull_policy,
        command=["noetl-projector"],
        env=projector_env(profile),
        port_name="metrics",
        port=PROJECTOR_METRICS_PORT,
        resources=spec.resources,
        mounts=[TMP_MOUNT],
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": meta(profile, PROJECTOR_NAME, PROJECTOR),
        "spec": {
            # Changing the replica count changes NOETL_EVENT_SHARD_COUNT: re-render and
            # roll the control-api and the projector together.
            "replicas": spec.replicas,
            "serviceName": PROJECTOR_NAME,
            "podManagementPolicy": "Parallel",
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(PROJECTOR_NAME)},
            "template": pod_template(
                PROJECTOR_NAME,
                PROJECTOR,
                service_account=service_account_name(PROJECTOR),
                containers=[main],
                volumes=[TMP_VOLUME],
                scrape_port=PROJECTOR_METRICS_PORT,
            ),
        },
    }


# --- worker pools ---------------------------------------------------------------------


def build_worker_deployment(profile: Profile, pool: WorkerPoolSpec) -> Manifest:
    """A pool's Deployment; replicas are left to its ScaledObject."""
    mounts: list[dict[str, Any]] = [TMP_MOUNT]
    volumes: list[dict[str, Any]] = [TMP_VOLUME]
    if pool.wasm_cache_size is not None:
        mounts.append({"name": "wasm-cache", "mountPath": WASM_CACHE_MOUNT})
        volumes.append({"name": "wasm-cache", "emptyDir": {"sizeLimit": pool.wasm_cache_size}})
    main = container(
        name="worker",
        image=profile.images.ref(pool.image),
        pull_policy=profile.images.pull_policy,
        command=["noetl-system-worker"],
        env=worker_env(profile, pool),
        port_name="metrics",
        port=WORKER_METRICS_PORT,
        resources=pool.resources,
        mounts=mounts,
    )
    component = f"worker-{pool.pool}"
    template = pod_template(
        pool.name,
        component,
        service_account=service_account_name(component),
        containers=[main],
        volumes=volumes,
        scrape_port=WORKER_METRICS_PORT,
        # Longer than WORKER_SHUTDOWN_GRACE_SECONDS, so the worker's own drain finishes first.
        grace_seconds=pool.shutdown_grace_seconds + 15,
    )
    template["metadata"]["labels"][POOL_LABEL] = pool.pool
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(profile, pool.name, component),
        "spec": {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": selector(pool.name)},
            "template": template,
        },
    }


def scaledobject_name(pool: WorkerPoolSpec) -> str:
    return f"{pool.name}-scaler"


def build_worker_scaledobject(profile: Profile, pool: WorkerPoolSpec) -> Manifest:
    """KEDA ScaledObject scaling a pool on its consumer's lag on NOETL_COMMANDS."""
    keda = pool.keda
    # KEDA reads trigger metadata as strings only.
    metadata = {
        "natsServerMonitoringEndpoint": profile.nats.monitoring_endpoint,
        "account": profile.nats.account,
        "stream": COMMANDS_STREAM,
        "consumer": pool.consumer,
        "lagThreshold": str(keda.lag_threshold),
        "activationLagThreshold": str(keda.activation_lag_threshold),
        "useHttps": "false",
    }
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": meta(profile, scaledobject_name(pool), f"worker-{pool.pool}"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": pool.name},
            "pollingInterval": keda.polling_interval,
            "cooldownPeriod": keda.cooldown_period,
            "minReplicaCount": keda.min_replicas,
            "maxReplicaCount": keda.max_replicas,
            "triggers": [{"type": "nats-jetstream", "metadata": metadata}],
        },
    }
