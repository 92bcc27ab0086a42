"""Manifest builders: plain dicts in the shape ``kubectl apply`` takes.

Every function is pure: a spec in, one or more manifests out. :func:`build_manifests`
groups them into the files of a rendered tree.
"""

from __future__ import annotations

from typing import Any

from ._env import (
    WASM_CACHE_MOUNT,
    EnvVar,
    control_api_env,
    migrate_env,
    outbox_publisher_env,
    projector_env,
    worker_env,
)
from ._spec import (
    COMMANDS_STREAM,
    CONTROL_API,
    CONTROL_API_PORT,
    OUTBOX_PUBLISHER,
    PROJECTOR,
    PROJECTOR_METRICS_PORT,
    PUBLISHER_METRICS_PORT,
    RUN_AS_USER,
    WORKER_METRICS_PORT,
    Profile,
    Resources,
    WorkerPoolSpec,
)

Manifest = dict[str, Any]

PART_OF = "noetl"
#: Label every worker pod carries with its pool's name.
POOL_LABEL = "noetl.io/pool"


def _labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": PART_OF,
    }


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF}


def _meta(profile: Profile, name: str, component: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": profile.namespace, "labels": _labels(name, component)}
    meta.update(extra)
    return meta


def _resources(res: Resources) -> dict[str, Any]:
    return {
        "requests": {"cpu": res.cpu_request, "memory": res.memory_request},
        "limits": {"cpu": res.cpu_limit, "memory": res.memory_limit},
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


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
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
            "labelSelector": {"matchLabels": _selector(name)},
        }
        for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")
    ]


_TMP_VOLUME = {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}
_TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def _container(
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
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": pull_policy,
        "command": command,
        "env": env,
        "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}],
        **_probes(port_name),
        "resources": _resources(resources),
        "securityContext": _container_security(),
        "volumeMounts": mounts,
    }


def _pod_template(
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
        "metadata": {"labels": _labels(name, component), "annotations": _scrape_annotations(scrape_port)},
        "spec": spec,
    }


# --- shared objects -------------------------------------------------------------------


def build_namespace(profile: Profile) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": profile.namespace,
            "labels": {
                "app.kubernetes.io/part-of": PART_OF,
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }


def build_secret(profile: Profile) -> Manifest:
    placeholder = profile.name != "kind"
    annotations = {
        "noetl.io/placeholder": "true" if placeholder else "false",
        "noetl.io/note": (
            "Placeholder values: create this Secret out of band (or with the Helm chart) before deploying."
            if placeholder
            else "Dev-only values for the throwaway in-cluster Postgres of the kind overlay."
        ),
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(profile, profile.secret_name, "config", annotations=annotations),
        "type": "Opaque",
        "stringData": dict(profile.secret_values),
    }


def service_account_name(workload: str) -> str:
    return f"noetl-{workload}"


def build_service_account(profile: Profile, workload: str) -> Manifest:
    name = service_account_name(workload)
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": _meta(profile, name, workload),
        "automountServiceAccountToken": False,
    }


def workloads(profile: Profile) -> list[str]:
    """Every workload name, which is also its ServiceAccount suffix."""
    return [CONTROL_API, OUTBOX_PUBLISHER, PROJECTOR, *(f"worker-{p.pool}" for p in profile.worker_pools)]


def build_role(profile: Profile) -> Manifest:
    """The one Role of the suite. No process talks to the Kubernetes API, so it grants nothing.

    It exists so that a future need is granted here, narrowly and reviewed, instead of
    through a ClusterRole; the tests refuse wildcards and Secret access in it.
    """
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _meta(profile, "noetl-runtime", "rbac"),
        "rules": [],
    }


def build_role_binding(profile: Profile) -> Manifest:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _meta(profile, "noetl-runtime", "rbac"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "noetl-runtime"},
        "subjects": [
            {"kind": "ServiceAccount", "name": service_account_name(w), "namespace": profile.namespace}
            for w in workloads(profile)
        ],
    }


def build_pdb(profile: Profile, name: str, component: str) -> Manifest:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(profile, name, component),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": _selector(name)}},
    }


# --- control-api ----------------------------------------------------------------------

CONTROL_API_NAME = "noetl-control-api"


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
        "resources": _resources(spec.resources),
        "securityContext": _container_security(),
        "volumeMounts": [_TMP_MOUNT],
    }
    container = _container(
        name="control-api",
        image=image,
        pull_policy=profile.images.pull_policy,
        command=["noetl-control-api", "serve"],
        env=control_api_env(profile),
        port_name="http",
        port=CONTROL_API_PORT,
        resources=spec.resources,
        mounts=[_TMP_MOUNT],
    )
    deployment_spec: dict[str, Any] = {}
    if spec.autoscale is None:
        deployment_spec["replicas"] = spec.replicas
    deployment_spec.update(
        {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(CONTROL_API_NAME)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": _pod_template(
                CONTROL_API_NAME,
                CONTROL_API,
                service_account=service_account_name(CONTROL_API),
                init_containers=[migrate],
                containers=[container],
                volumes=[_TMP_VOLUME],
                scrape_port=CONTROL_API_PORT,
            ),
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(profile, CONTROL_API_NAME, CONTROL_API),
        "spec": deployment_spec,
    }


def build_control_api_service(profile: Profile) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(profile, CONTROL_API_NAME, CONTROL_API),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(CONTROL_API_NAME),
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
        "metadata": _meta(profile, CONTROL_API_NAME, CONTROL_API),
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

OUTBOX_PUBLISHER_NAME = "noetl-outbox-publisher"
PROJECTOR_NAME = "noetl-projector"


def build_outbox_publisher_deployment(profile: Profile) -> Manifest:
    spec = profile.outbox_publisher
    container = _container(
        name="outbox-publisher",
        image=profile.images.ref("noetl-outbox-publisher"),
        pull_policy=profile.images.pull_policy,
        command=["noetl-outbox-publisher"],
        env=outbox_publisher_env(profile),
        port_name="metrics",
        port=PUBLISHER_METRICS_PORT,
        resources=spec.resources,
        mounts=[_TMP_MOUNT],
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(profile, OUTBOX_PUBLISHER_NAME, OUTBOX_PUBLISHER),
        "spec": {
            "replicas": spec.replicas,
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(OUTBOX_PUBLISHER_NAME)},
            "template": _pod_template(
                OUTBOX_PUBLISHER_NAME,
                OUTBOX_PUBLISHER,
                service_account=service_account_name(OUTBOX_PUBLISHER),
                containers=[container],
                volumes=[_TMP_VOLUME],
                scrape_port=PUBLISHER_METRICS_PORT,
            ),
        },
    }


def build_projector_service(profile: Profile) -> Manifest:
    """Headless Service the StatefulSet needs for stable pod names."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(profile, PROJECTOR_NAME, PROJECTOR),
        "spec": {
            "clusterIP": "None",
            "selector": _selector(PROJECTOR_NAME),
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
    container = _container(
        name="projector",
        image=profile.images.ref("noetl-projector"),
        pull_policy=profile.images.pull_policy,
        command=["noetl-projector"],
        env=projector_env(profile),
        port_name="metrics",
        port=PROJECTOR_METRICS_PORT,
        resources=spec.resources,
        mounts=[_TMP_MOUNT],
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(profile, PROJECTOR_NAME, PROJECTOR),
        "spec": {
            # Changing the replica count changes NOETL_EVENT_SHARD_COUNT: re-render and
            # roll the control-api and the projector together.
            "replicas": spec.replicas,
            "serviceName": PROJECTOR_NAME,
            "podManagementPolicy": "Parallel",
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(PROJECTOR_NAME)},
            "template": _pod_template(
                PROJECTOR_NAME,
                PROJECTOR,
                service_account=service_account_name(PROJECTOR),
                containers=[container],
                volumes=[_TMP_VOLUME],
                scrape_port=PROJECTOR_METRICS_PORT,
            ),
        },
    }


# --- worker pools ---------------------------------------------------------------------


def build_worker_deployment(profile: Profile, pool: WorkerPoolSpec) -> Manifest:
    """A pool's Deployment; replicas are left to its ScaledObject."""
    mounts: list[dict[str, Any]] = [_TMP_MOUNT]
    volumes: list[dict[str, Any]] = [_TMP_VOLUME]
    if pool.wasm_cache_size is not None:
        mounts.append({"name": "wasm-cache", "mountPath": WASM_CACHE_MOUNT})
        volumes.append({"name": "wasm-cache", "emptyDir": {"sizeLimit": pool.wasm_cache_size}})
    container = _container(
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
    template = _pod_template(
        pool.name,
        component,
        service_account=service_account_name(component),
        containers=[container],
        volumes=volumes,
        scrape_port=WORKER_METRICS_PORT,
        # Longer than WORKER_SHUTDOWN_GRACE_SECONDS, so the worker's own drain finishes first.
        grace_seconds=pool.shutdown_grace_seconds + 15,
    )
    template["metadata"]["labels"][POOL_LABEL] = pool.pool
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(profile, pool.name, component),
        "spec": {
            "revisionHistoryLimit": 5,
            "selector": {"matchLabels": _selector(pool.name)},
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
        "metadata": _meta(profile, scaledobject_name(pool), f"worker-{pool.pool}"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": pool.name},
            "pollingInterval": keda.polling_interval,
            "cooldownPeriod": keda.cooldown_period,
            "minReplicaCount": keda.min_replicas,
            "maxReplicaCount": keda.max_replicas,
            "triggers": [{"type": "nats-jetstream", "metadata": metadata}],
        },
    }


# --- network policies (docs/security.md §7) -------------------------------------------

NETWORK_POLICY_API = "networking.k8s.io/v1"
DEFAULT_DENY_NAME = "noetl-default-deny-ingress"
WORKERS_POLICY_NAME = "noetl-workers"
NATS_CLIENT_PORT = 4222
NATS_MONITOR_PORT = 8222
POSTGRES_PORT = 5432


def _pods_named(name: str) -> dict[str, Any]:
    return {"podSelector": {"matchLabels": _selector(name)}}


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
        "metadata": _meta(profile, name, component),
        "spec": {"podSelector": pods, "policyTypes": ["Ingress"], "ingress": rules},
    }


def build_default_deny(profile: Profile) -> Manifest:
    """Every pod of the namespace refuses ingress unless another policy allows it."""
    return {
        "apiVersion": NETWORK_POLICY_API,
        "kind": "NetworkPolicy",
        "metadata": _meta(profile, DEFAULT_DENY_NAME, "network"),
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
        profile, CONTROL_API_NAME, CONTROL_API, {"matchLabels": _selector(CONTROL_API_NAME)}, rules
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
            {"matchLabels": _selector(OUTBOX_PUBLISHER_NAME)},
            _monitoring_rule(profile, PUBLISHER_METRICS_PORT),
        ),
        _network_policy(
            profile,
            PROJECTOR_NAME,
            PROJECTOR,
            {"matchLabels": _selector(PROJECTOR_NAME)},
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
            {"matchLabels": _selector("postgres")},
            [_rule([_pods_named(CONTROL_API_NAME)], POSTGRES_PORT)],
        ),
        _network_policy(
            profile,
            "nats",
            "dev-infra",
            {"matchLabels": _selector("nats")},
            [
                _rule(_suite_clients(), NATS_CLIENT_PORT),
                # The ScaledObjects' nats-jetstream scaler reads consumer lag from here.
                _rule([_namespace_named(profile.network.keda_namespace)], NATS_MONITOR_PORT),
            ],
        ),
    ]


# --- dev infrastructure for kind ------------------------------------------------------


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
        "resources": _resources(
            Resources(cpu_request="50m", memory_request="128Mi", cpu_limit="1", memory_limit="512Mi")
        ),
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "data", "mountPath": data_path}],
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _meta(profile, name, "dev-infra"),
        "spec": {
            "replicas": 1,
            "serviceName": name,
            "selector": {"matchLabels": _selector(name)},
            "template": {
                "metadata": {"labels": _labels(name, "dev-infra")},
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
        "metadata": _meta(profile, name, "dev-infra"),
        "spec": {
            "type": "ClusterIP",
            "selector": _selector(name),
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


# --- the tree -------------------------------------------------------------------------


def build_manifests(profile: Profile) -> dict[str, list[Manifest]]:
    """Rendered files of one profile, in apply order, keyed by file name."""
    files: dict[str, list[Manifest]] = {
        "namespace.yaml": [build_namespace(profile)],
        "secrets.yaml": [build_secret(profile)],
        "rbac.yaml": [
            *(build_service_account(profile, w) for w in workloads(profile)),
            build_role(profile),
            build_role_binding(profile),
        ],
    }
    if profile.network.policies:
        # Before the workloads, so that no pod of the suite starts unprotected.
        files["network-policies.yaml"] = build_network_policies(profile)
    if profile.dev_infra:
        files["dev-infra.yaml"] = build_dev_infra(profile)
        if profile.network.policies:
            files["dev-infra.yaml"] += build_dev_infra_policies(profile)

    control_api = [build_control_api_service(profile), build_control_api_deployment(profile)]
    hpa = build_control_api_hpa(profile)
    if hpa is not None:
        control_api.append(hpa)
    if profile.pdbs:
        control_api.append(build_pdb(profile, CONTROL_API_NAME, CONTROL_API))
    files["control-api.yaml"] = control_api

    publisher = [build_outbox_publisher_deployment(profile)]
    projector = [build_projector_service(profile), build_projector_statefulset(profile)]
    if profile.pdbs:
        publisher.append(build_pdb(profile, OUTBOX_PUBLISHER_NAME, OUTBOX_PUBLISHER))
        projector.append(build_pdb(profile, PROJECTOR_NAME, PROJECTOR))
    files["outbox-publisher.yaml"] = publisher
    files["projector.yaml"] = projector

    for pool in profile.worker_pools:
        docs = [build_worker_deployment(profile, pool)]
        if profile.pdbs:
            docs.append(build_pdb(profile, pool.name, f"worker-{pool.pool}"))
        files[f"worker-{pool.pool}.yaml"] = docs
    # Separate file: applying it needs the KEDA CRDs installed.
    files["keda.yaml"] = [build_worker_scaledobject(profile, pool) for pool in profile.worker_pools]
    return files
