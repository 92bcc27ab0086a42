"""The three deployment profiles: the base manifests, the ``kind`` overlay and the ``gke`` overlay.

They are the only place where sizes, image names and endpoints are chosen; every manifest,
the Helm chart's default values and the docs' tables are derived from them.
"""

from __future__ import annotations

from dataclasses import replace

from ._spec import (
    ControlApiSpec,
    Images,
    KedaSpec,
    NatsEndpoints,
    Profile,
    Resources,
    ServiceSpec,
    WorkerPoolSpec,
    token_keys,
)

PLACEHOLDER = "CHANGE-ME"


def _placeholder_secrets(pools: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    # Token placeholders are shorter than the 32 characters a configured token needs, so a
    # control-api started with one refuses to start instead of accepting a guessable token.
    tokens = [(key, f"{PLACEHOLDER}-{_slug(key)}") for key in token_keys(pools)]
    return (
        ("NOETL_DATABASE_URL", f"postgresql://noetl:{PLACEHOLDER}@postgres.example.internal:5432/noetl"),
        # a Fernet key: python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'
        ("NOETL_CREDENTIALS_KEY", f"{PLACEHOLDER}-generate-a-fernet-key"),
        *tokens,
        ("NATS_USER", f"{PLACEHOLDER}-nats-user"),
        ("NATS_PASSWORD", f"{PLACEHOLDER}-nats-password"),
    )


def _slug(key: str) -> str:
    return key.removeprefix("NOETL_").lower().replace("_", "-")


def _kind_token(key: str) -> str:
    return f"noetl_kind-only-{_slug(key)}-not-a-secret"


def base_profile() -> Profile:
    """Cluster-agnostic defaults: local image names, external Postgres and NATS."""
    worker = Resources(cpu_request="250m", memory_request="256Mi", cpu_limit="1", memory_limit="512Mi")
    pools = (
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
    )
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
        worker_pools=pools,
        secret_values=_placeholder_secrets(tuple(p.pool for p in pools)),
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
            # base64url of the 32 bytes "kind-only-credentials-key-32byte": a dev-only Fernet key
            ("NOETL_CREDENTIALS_KEY", "a2luZC1vbmx5LWNyZWRlbnRpYWxzLWtleS0zMmJ5dGU="),
            *((key, _kind_token(key)) for key in token_keys(tuple(p.pool for p in base.worker_pools))),
            ("NATS_USER", ""),
            ("NATS_PASSWORD", ""),
        ),
        dev_infra=True,
        pdbs=False,
        # kind's default pod and service subnets (a cluster created without a config file).
        network=replace(base.network, worker_http_deny_cidrs=("10.244.0.0/16", "10.96.0.0/12")),
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
