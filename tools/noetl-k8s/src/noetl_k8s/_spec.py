"""Typed deployment specs: what differs between clusters, and nothing else.

A :class:`Profile` says everything the renderer needs for one target (the base
manifests, the ``kind`` overlay, the ``gke`` overlay); ``_profiles.py`` holds the three.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

#: The workloads that make up the suite, by their manifest name.
CONTROL_API = "control-api"
OUTBOX_PUBLISHER = "outbox-publisher"
PROJECTOR = "projector"

#: Port the control-api serves HTTP on (architecture.md §9).
CONTROL_API_PORT = 8082
#: Ports the other processes serve ``/metrics``, ``/healthz`` and ``/readyz`` on (their defaults).
WORKER_METRICS_PORT = 9090
PUBLISHER_METRICS_PORT = 9091
PROJECTOR_METRICS_PORT = 9092

COMMANDS_STREAM = "NOETL_COMMANDS"
#: Non-root uid/gid the images run as.
RUN_AS_USER = 10001


_POOL_NAME = re.compile(r"^[a-z][a-z0-9]*$")


def worker_token_key(pool: str) -> str:
    """Secret key (and control-api env var) of a pool's configured token (docs/security.md §2)."""
    return f"NOETL_WORKER_TOKEN_{pool.upper()}"


def consumer_name(pool: str) -> str:
    """Durable consumer of a pool on NOETL_COMMANDS (architecture.md §4)."""
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

    def __post_init__(self) -> None:
        # The name becomes a DNS label, a consumer name and the suffix of an env var name.
        if not _POOL_NAME.match(self.pool):
            raise ValueError(f"pool name {self.pool!r} must be lower-case letters and digits")

    @property
    def name(self) -> str:
        return f"noetl-worker-{self.pool}"

    @property
    def token_key(self) -> str:
        return worker_token_key(self.pool)

    @property
    def consumer(self) -> str:
        return consumer_name(self.pool)

    @property
    def filter_subject(self) -> str:
        return filter_subject(self.pool)


#: The control-api's own defaults for these two OIDC settings.
OIDC_ROLE_CLAIM = "noetl_role"
OIDC_ALGORITHMS = "RS256,ES256"


@dataclass(frozen=True, kw_only=True)
class OidcSpec:
    """Optional OIDC sign-in for humans (docs/security.md §2); rendered only when set."""

    issuer: str
    audience: str
    #: Empty: discovered from the issuer.
    jwks_url: str = ""
    role_claim: str = OIDC_ROLE_CLAIM
    algorithms: str = OIDC_ALGORITHMS

    def __post_init__(self) -> None:
        if not self.issuer.startswith("https://") or not self.audience:
            raise ValueError("OIDC needs an https:// issuer and an audience")


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
    oidc: OidcSpec | None = None


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


Labels = tuple[tuple[str, str], ...]


@dataclass(frozen=True, kw_only=True)
class NetworkPeer:
    """A NetworkPolicy peer allowed to reach the control-api besides the suite's own pods.

    ``namespace`` / ``pods`` are ``matchLabels`` of a namespace / pod selector (``None``:
    no such selector; both set: pods with those labels in those namespaces); ``cidr`` is an
    ``ipBlock`` instead (e.g. a cloud load balancer's proxy range).
    """

    namespace: Labels | None = None
    pods: Labels | None = None
    cidr: str | None = None

    def __post_init__(self) -> None:
        if self.cidr is not None:
            if self.namespace is not None or self.pods is not None:
                raise ValueError("a peer is either a CIDR or selectors, not both")
            ipaddress.ip_network(self.cidr)
        elif self.namespace is None and self.pods is None:
            raise ValueError("a peer needs a namespace or pod selector, or a CIDR")

    def to_k8s(self) -> dict[str, object]:
        """The ``NetworkPolicyPeer`` object."""
        if self.cidr is not None:
            return {"ipBlock": {"cidr": self.cidr}}
        peer: dict[str, object] = {}
        if self.namespace is not None:
            peer["namespaceSelector"] = {"matchLabels": dict(self.namespace)} if self.namespace else {}
        if self.pods is not None:
            peer["podSelector"] = {"matchLabels": dict(self.pods)} if self.pods else {}
        return peer


def ingress_controller(namespace: str, **pod_labels: str) -> NetworkPeer:
    """Pods with ``pod_labels`` in the namespace called ``namespace`` (e.g. ingress-nginx)."""
    return NetworkPeer(
        namespace=(("kubernetes.io/metadata.name", namespace),),
        pods=tuple(sorted(pod_labels.items())),
    )


@dataclass(frozen=True, kw_only=True)
class NetworkSpec:
    """Who may reach what (docs/security.md §7), and the ranges http steps may not call."""

    #: Render the NetworkPolicies (needs a CNI that enforces them).
    policies: bool = True
    #: Sources besides the suite's own pods that may reach the control-api (an ingress controller).
    api_clients: tuple[NetworkPeer, ...] = ()
    #: Namespace whose pods may scrape the metrics ports; empty: none may.
    monitoring_namespace: str = "monitoring"
    #: Namespace of the KEDA operator, which reads the in-cluster NATS's monitoring port.
    keda_namespace: str = "keda"
    #: The cluster's pod and service CIDRs: ``WORKER_HTTP_DENY_CIDRS`` of every pool.
    worker_http_deny_cidrs: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for cidr in self.worker_http_deny_cidrs:
            ipaddress.ip_network(cidr)


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
    network: NetworkSpec = field(default_factory=NetworkSpec)
    labels: tuple[tuple[str, str], ...] = field(default=())

    @property
    def server_url(self) -> str:
        return f"http://noetl-control-api.{self.namespace}.svc.cluster.local:{CONTROL_API_PORT}"

    def pool(self, name: str) -> WorkerPoolSpec:
        for spec in self.worker_pools:
            if spec.pool == name:
                return spec
        raise KeyError(name)


#: Configured tokens the control-api reads, besides one NOETL_WORKER_TOKEN_<POOL> per pool.
ADMIN_TOKEN = "NOETL_ADMIN_TOKEN"
PUBLISHER_TOKEN = "NOETL_PUBLISHER_TOKEN"
PROJECTOR_TOKEN = "NOETL_PROJECTOR_TOKEN"
#: The one name under which every service other than the control-api reads its own token.
API_TOKEN = "NOETL_API_TOKEN"


def token_keys(pools: tuple[str, ...]) -> tuple[str, ...]:
    """Secret keys of every configured token a deployment with ``pools`` needs."""
    return (ADMIN_TOKEN, PUBLISHER_TOKEN, PROJECTOR_TOKEN, *(worker_token_key(p) for p in pools))
