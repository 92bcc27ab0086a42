"""Typed deployment specs: what differs between clusters, and nothing else.

A :class:`Profile` says everything the renderer needs for one target (the base
manifests, the ``kind`` overlay, the ``gke`` overlay). The three profiles below are the
only place where sizes, image names and endpoints are chosen; every manifest, the Helm
chart's default values and the docs' tables are derived from them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

#: The workloads that make up the suite, by their manifest name.
CONTROL_API = "control-api"
OUTBOX_PUBLISHER = "outbox-publisher"
PROJECTOR = "projector"

#: Port the control-api serves HTTP on (ARCHITECTURE §9).
CONTROL_API_PORT = 8082
#: Ports the other processes serve ``/metrics``, ``/healthz`` and ``/readyz`` on (their defaults).
WORKER_METRICS_PORT = 9090
PUBLISHER_METRICS_PORT = 9091
PROJECTOR_METRICS_PORT = 9092

COMMANDS_STREAM = "NOETL_COMMANDS"
#: Non-root uid/gid the images run as.
RUN_AS_USER = 10001


def consumer_name(pool: str) -> str:
    """Durable consumer of a pool on NOETL_COMMANDS (ARCHITECTURE §4)."""
    return f"noetl_worker_pool_{pool}"


def filter_subject(pool: str) -> str:
    return f"noetl.commands.{pool}.>"


@dataclass(frozen=True, kw_only=True)
class Resources:
    """Container requests and limits, as Kubernetes quantities."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


@dataclass(frozen=True, kw_only=True)
class Images:
    """Where images come from: ``<registry>/<name>:<tag>`` (no registry for local images)."""

    registry: str = ""
    tag: str = "0.1.0"
    pull_policy: str = "IfNotPresent"

    def ref(self, name: str) -> str:
        prefix = f"{self.registry.rstrip('/')}/" if self.registry else ""
        return f"{prefix}{name}:{self.tag}"


@dataclass(frozen=True, kw_only=True)
class KedaSpec:
    """The ``nats-jetstream`` ScaledObject of one worker pool."""

    min_replicas: int
    max_replicas: int
    lag_threshold: int
    activation_lag_threshold: int
    polling_interval: int = 15
    cooldown_period: int = 120

    def __post_init__(self) -> None:
        if self.min_replicas < 0 or self.max_replicas < max(1, self.min_replicas):
            raise ValueError(f"bad replica bounds {self.min_replicas}..{self.max_replicas}")
        if self.lag_threshold <= 0 or self.activation_lag_threshold < 0:
            raise ValueError("lag thresholds must be positive")
        if self.polling_interval <= 0 or self.cooldown_period <= 0:
            raise ValueError("polling interval and cooldown must be positive")


@dataclass(frozen=True, kw_only=True)
class WorkerPoolSpec:
    """One worker pool: a Deployment of ``noetl-system-worker`` bound to one consumer."""

    pool: str
    resources: Resources
    keda: KedaSpec
    max_concurrent: int = 8
    heartbeat_interval: float = 5.0
    #: Seconds a stopping worker lets running tools finish; the pod's grace period is longer.
    shutdown_grace_seconds: int = 45
    #: Size of the ``wasm-cache`` emptyDir; ``None`` keeps compiled modules in memory only.
    wasm_cache_size: str | None = None
    image: str = "noetl-system-worker"

    @property
    def name(self) -> str:
        return f"noetl-worker-{self.pool}"

    @property
    def consumer(self) -> str:
        return consumer_name(self.pool)

    @property
    def filter_subject(self) -> str:
        return filter_subject(self.pool)


@dataclass(frozen=True, kw_only=True)
class ControlApiSpec:
    resources: Resources
    #: Fixed replica count, used when ``autoscale`` is ``None``.
    replicas: int = 2
    #: ``(min, max)`` replicas for a CPU HorizontalPodAutoscaler.
    autoscale: tuple[int, int] | None = (2, 3)
    cpu_target_percent: int = 70
    claim_lease_seconds: int = 30
    result_context_max_bytes: int = 102400
    db_pool_size: int = 10


@dataclass(frozen=True, kw_only=True)
class ServiceSpec:
    """outbox-publisher or projector: replicas and size."""

    replicas: int
    resources: Resources


@dataclass(frozen=True, kw_only=True)
class NatsEndpoints:
    url: str
    monitoring_endpoint: str
    account: str = "$G"


@dataclass(frozen=True, kw_only=True)
class Profile:
    """Everything one rendered tree depends on."""

    name: str
    namespace: str
    images: Images
    nats: NatsEndpoints
    control_api: ControlApiSpec
    outbox_publisher: ServiceSpec
    projector: ServiceSpec
    worker_pools: tuple[WorkerPoolSpec, ...]
    log_level: str = "INFO"
    secret_name: str = "noetl-secrets"
    #: Secret values; the base and gke trees carry placeholders only.
    secret_values: tuple[tuple[str, str], ...] = ()
    #: Render an in-cluster Postgres and NATS for end-to-end tests (kind only).
    dev_infra: bool = False
    #: Render PodDisruptionBudgets (not on a one-node kind cluster).
    pdbs: bool = True
    labels: tuple[tuple[str, str], ...] = field(default=())

    @property
    def server_url(self) -> str:
        return f"http://noetl-control-api.{self.namespace}.svc.cluster.local:{CONTROL_API_PORT}"

    def pool(self, name: str) -> WorkerPoolSpec:
        for spec in self.worker_pools:
            if spec.pool == name:
                return spec
        raise KeyError(name)


PLACEHOLDER = "CHANGE-ME"

#: Keys of the one Secret every workload reads from.
SECRET_KEYS = (
    "NOETL_DATABASE_URL",
    "NOETL_INTERNAL_API_TOKEN",
    "NOETL_CREDENTIALS_KEY",
    "NATS_USER",
    "NATS_PASSWORD",
)

_PLACEHOLDER_SECRETS = (
    ("NOETL_DATABASE_URL", f"postgresql://noetl:{PLACEHOLDER}@postgres.example.internal:5432/noetl"),
    ("NOETL_INTERNAL_API_TOKEN", f"{PLACEHOLDER}-generate-with-openssl-rand-hex-32"),
    # a Fernet key: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'
    ("NOETL_CREDENTIALS_KEY", f"{PLACEHOLDER}-generate-a-fernet-key"),
    ("NATS_USER", f"{PLACEHOLDER}-nats-user"),
    ("NATS_PASSWORD", f"{PLACEHOLDER}-nats-password"),
)


def base_profile() -> Profile:
    """Cluster-agnostic defaults: local image names, external Postgres and NATS."""
    worker = Resources(cpu_request="250m", memory_request="256Mi", cpu_limit="1", memory_limit="512Mi")
    return Profile(
        name="base",
        namespace="noetl",
        images=Images(),
        nats=NatsEndpoints(
            url="nats://nats.nats.svc.cluster.local:4222",
            monitoring_endpoint="nats.nats.svc.cluster.local:8222",
        ),
        control_api=ControlApiSpec(
            resources=Resources(
                cpu_request="250m", memory_request="256Mi", cpu_limit="1", memory_limit="512Mi"
            ),
        ),
        outbox_publisher=ServiceSpec(
            replicas=2,
            resources=Resources(
                cpu_request="100m", memory_request="128Mi", cpu_limit="500m", memory_limit="256Mi"
            ),
        ),
        projector=ServiceSpec(
            replicas=2,
            resources=Resources(
                cpu_request="100m", memory_request="128Mi", cpu_limit="500m", memory_limit="256Mi"
            ),
        ),
        worker_pools=(
            WorkerPoolSpec(
                pool="shared",
                resources=worker,
                keda=KedaSpec(min_replicas=1, max_replicas=20, lag_threshold=10, activation_lag_threshold=1),
            ),
            WorkerPoolSpec(
                pool="system",
                resources=Resources(
                    cpu_request="250m", memory_request="384Mi", cpu_limit="1", memory_limit="768Mi"
                ),
                keda=KedaSpec(min_replicas=1, max_replicas=5, lag_threshold=5, activation_lag_threshold=1),
                max_concurrent=4,
                wasm_cache_size="512Mi",
            ),
        ),
        secret_values=_PLACEHOLDER_SECRETS,
    )


def kind_profile() -> Profile:
    """A one-node kind cluster: locally loaded images, in-cluster Postgres and NATS, small sizes."""
    base = base_profile()
    small = Resources(cpu_request="50m", memory_request="96Mi", cpu_limit="500m", memory_limit="256Mi")
    ns = base.namespace
    return replace(
        base,
        name="kind",
        images=Images(tag="dev", pull_policy="IfNotPresent"),
        nats=NatsEndpoints(
            url=f"nats://nats.{ns}.svc.cluster.local:4222",
            monitoring_endpoint=f"nats.{ns}.svc.cluster.local:8222",
        ),
        control_api=replace(base.control_api, resources=small, replicas=1, autoscale=None),
        outbox_publisher=ServiceSpec(replicas=1, resources=small),
        projector=ServiceSpec(replicas=1, resources=small),
        worker_pools=tuple(
            replace(p, resources=small, keda=replace(p.keda, max_replicas=min(p.keda.max_replicas, 3)))
            for p in base.worker_pools
        ),
        log_level="DEBUG",
        # Dev-only credentials for the throwaway in-cluster Postgres; NATS runs without auth.
        secret_values=(
            (
                "NOETL_DATABASE_URL",
                f"postgresql://noetl:noetl-kind-only@postgres.{ns}.svc.cluster.local:5432/noetl",
            ),
            ("NOETL_INTERNAL_API_TOKEN", "kind-only-internal-token"),
            # base64url of the 32 bytes "kind-only-credentials-key-32byte": a dev-only Fernet key
            ("NOETL_CREDENTIALS_KEY", "a2luZC1vbmx5LWNyZWRlbnRpYWxzLWtleS0zMmJ5dGU="),
            ("NATS_USER", ""),
            ("NATS_PASSWORD", ""),
        ),
        dev_infra=True,
        pdbs=False,
    )


def gke_profile() -> Profile:
    """GKE: images from Artifact Registry, production sizes, more projector shards."""
    base = base_profile()
    return replace(
        base,
        name="gke",
        # Placeholder project; set your own with the Helm chart or by editing this profile.
        images=Images(registry="us-docker.pkg.dev/noetl-project/noetl", tag="0.1.0", pull_policy="Always"),
        control_api=replace(
            base.control_api,
            resources=Resources(
                cpu_request="500m", memory_request="512Mi", cpu_limit="2", memory_limit="1Gi"
            ),
        ),
        outbox_publisher=ServiceSpec(
            replicas=2,
            resources=Resources(
                cpu_request="250m", memory_request="256Mi", cpu_limit="1", memory_limit="512Mi"
            ),
        ),
        projector=ServiceSpec(
            replicas=4,
            resources=Resources(
                cpu_request="250m", memory_request="256Mi", cpu_limit="1", memory_limit="512Mi"
            ),
        ),
        worker_pools=(
            replace(
                base.pool("shared"),
                resources=Resources(
                    cpu_request="500m", memory_request="512Mi", cpu_limit="2", memory_limit="1Gi"
                ),
            ),
            replace(
                base.pool("system"),
                resources=Resources(
                    cpu_request="500m", memory_request="768Mi", cpu_limit="2", memory_limit="1536Mi"
                ),
                wasm_cache_size="1Gi",
            ),
        ),
    )


PROFILES = {"base": base_profile, "kind": kind_profile, "gke": gke_profile}
