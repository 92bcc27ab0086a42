"""The environment each workload is started with: the deploy side of architecture.md §9.

One function per workload returns Kubernetes ``EnvVar`` objects. Every name here is one
the services' config parsers read (a test checks it against their source), and
``compose.yaml`` names the same ones for the same service, apart from the differences
listed in :data:`K8S_EXPLICIT` and :data:`COMPOSE_ONLY`.
"""

from __future__ import annotations

from typing import Any

from ._spec import (
    ADMIN_TOKEN,
    API_TOKEN,
    COMMANDS_STREAM,
    CONTROL_API_PORT,
    PROJECTOR_METRICS_PORT,
    PROJECTOR_TOKEN,
    PUBLISHER_METRICS_PORT,
    PUBLISHER_TOKEN,
    WORKER_METRICS_PORT,
    Profile,
    WorkerPoolSpec,
)

EnvVar = dict[str, Any]

#: Where the system pool keeps serialized compiled WASM modules (same path as compose.yaml).
WASM_CACHE_MOUNT = "/var/cache/noetl/wasm"

#: Set on Kubernetes although compose leaves them to the services' defaults, and why.
K8S_EXPLICIT: dict[str, str] = {
    "NATS_USER": "the cluster's NATS may require credentials; compose's NATS runs without auth",
    "NATS_PASSWORD": "as NATS_USER",
    "NATS_STREAM": "the deployment spec spells the worker's stream out; compose uses the default",
    "NATS_CONSUMER": "as NATS_STREAM; must equal the ScaledObject's consumer",
    "NATS_FILTER_SUBJECT": "as NATS_STREAM",
    "WORKER_MAX_CONCURRENT": "sized per pool",
    "WORKER_HEARTBEAT_INTERVAL": "pinned below the consumer ack wait",
    "WORKER_SHUTDOWN_GRACE_SECONDS": "must stay below terminationGracePeriodSeconds",
    "NOETL_COMMAND_CLAIM_LEASE_SECONDS": "pinned so that a rolling update does not change it silently",
    "NOETL_EVENT_RESULT_CONTEXT_MAX_BYTES": "as NOETL_COMMAND_CLAIM_LEASE_SECONDS",
    "NOETL_DB_POOL_SIZE": "sized against the database's max_connections and the replica count",
    "WORKER_HTTP_DENY_CIDRS": "the cluster's pod and service ranges; compose's network has no fixed range",
}

#: Set by compose's shared ``x-noetl-env`` block on services that do not read them.
COMPOSE_ONLY: dict[str, str] = {
    "NATS_URL": "the control-api never connects to NATS",
    "NOETL_EVENT_SHARD_COUNT": "only the control-api and the projector read it",
    "WORKER_HTTP_ALLOW_CIDRS": "loopback is opened to http steps in dev only; in a pod it holds sidecars' admin ports",
}


def _value(name: str, value: object) -> EnvVar:
    return {"name": name, "value": str(value)}


def _secret(profile: Profile, key: str, *, optional: bool = False, name: str | None = None) -> EnvVar:
    """``name`` read from the Secret's ``key`` (``name`` defaults to the key)."""
    ref: dict[str, Any] = {"name": profile.secret_name, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": name or key, "valueFrom": {"secretKeyRef": ref}}


def _own_token(profile: Profile, key: str) -> EnvVar:
    """A service's own credential: only its key of the Secret, as NOETL_API_TOKEN."""
    return _secret(profile, key, name=API_TOKEN)


def _field(name: str, path: str) -> EnvVar:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _nats(profile: Profile) -> list[EnvVar]:
    return [
        _value("NATS_URL", profile.nats.url),
        _secret(profile, "NATS_USER", optional=True),
        _secret(profile, "NATS_PASSWORD", optional=True),
    ]


def _oidc(profile: Profile) -> list[EnvVar]:
    oidc = profile.control_api.oidc
    if oidc is None:
        return []
    env = [_value("NOETL_OIDC_ISSUER", oidc.issuer), _value("NOETL_OIDC_AUDIENCE", oidc.audience)]
    if oidc.jwks_url:
        env.append(_value("NOETL_OIDC_JWKS_URL", oidc.jwks_url))
    env += [
        _value("NOETL_OIDC_ROLE_CLAIM", oidc.role_claim),
        _value("NOETL_OIDC_ALGORITHMS", oidc.algorithms),
    ]
    return env


def control_api_env(profile: Profile) -> list[EnvVar]:
    api = profile.control_api
    return [
        _secret(profile, "NOETL_DATABASE_URL"),
        # Encrypts credentials and keychain values at rest.
        _secret(profile, "NOETL_CREDENTIALS_KEY"),
        # The configured tokens it accepts (docs/security.md §2). The bootstrap admin token
        # is optional so that it can be dropped from the Secret once named admin tokens exist.
        _secret(profile, ADMIN_TOKEN, optional=True),
        _secret(profile, PUBLISHER_TOKEN),
        _secret(profile, PROJECTOR_TOKEN),
        # Sorted by pool, as the chart ranges over its pools.
        *(_secret(profile, pool.token_key) for pool in sorted(profile.worker_pools, key=lambda p: p.pool)),
        *_oidc(profile),
        # The built-in WASM plug-ins the image ships (plugins/wasm), published at start.
        _value("NOETL_PLUGIN_SEED_DIR", "/opt/noetl/plugins"),
        _value("NOETL_API_BIND", f"0.0.0.0:{CONTROL_API_PORT}"),
        # Put into every command notification; workers call back on this URL.
        _value("NOETL_SERVER_URL", profile.server_url),
        # The control-api writes event subjects with this shard count; it must equal the
        # number of projector replicas, so both come from the projector spec.
        _value("NOETL_EVENT_SHARD_COUNT", profile.projector.replicas),
        _value("NOETL_COMMAND_CLAIM_LEASE_SECONDS", api.claim_lease_seconds),
        _value("NOETL_EVENT_RESULT_CONTEXT_MAX_BYTES", api.result_context_max_bytes),
        _value("NOETL_DB_POOL_SIZE", api.db_pool_size),
        _value("NOETL_LOG_LEVEL", profile.log_level),
    ]


def migrate_env(profile: Profile) -> list[EnvVar]:
    """The migration init container needs only the database."""
    return [_secret(profile, "NOETL_DATABASE_URL"), _value("NOETL_LOG_LEVEL", profile.log_level)]


def outbox_publisher_env(profile: Profile) -> list[EnvVar]:
    return [
        _value("NOETL_SERVER_URL", profile.server_url),
        _own_token(profile, PUBLISHER_TOKEN),
        *_nats(profile),
        _value("PUBLISHER_METRICS_BIND", f"0.0.0.0:{PUBLISHER_METRICS_PORT}"),
        _value("NOETL_LOG_LEVEL", profile.log_level),
    ]


def projector_env(profile: Profile) -> list[EnvVar]:
    return [
        _value("NOETL_SERVER_URL", profile.server_url),
        _own_token(profile, PROJECTOR_TOKEN),
        *_nats(profile),
        # The StatefulSet ordinal picks the event shard this replica consumes (Kubernetes
        # >= 1.28 labels each pod with its index; the projector also falls back to the
        # trailing -N of HOSTNAME).
        _field("PROJECTOR_SHARD", "metadata.labels['apps.kubernetes.io/pod-index']"),
        _value("NOETL_EVENT_SHARD_COUNT", profile.projector.replicas),
        _value("PROJECTOR_METRICS_BIND", f"0.0.0.0:{PROJECTOR_METRICS_PORT}"),
        _value("NOETL_LOG_LEVEL", profile.log_level),
    ]


def worker_env(profile: Profile, pool: WorkerPoolSpec) -> list[EnvVar]:
    env = [
        _field("WORKER_ID", "metadata.name"),
        _value("WORKER_POOL_NAME", pool.pool),
        _value("WORKER_MAX_CONCURRENT", pool.max_concurrent),
        _value("WORKER_HEARTBEAT_INTERVAL", f"{pool.heartbeat_interval:g}"),
        _value("WORKER_SHUTDOWN_GRACE_SECONDS", pool.shutdown_grace_seconds),
        _value("WORKER_METRICS_BIND", f"0.0.0.0:{WORKER_METRICS_PORT}"),
        _value("NOETL_SERVER_URL", profile.server_url),
        # The pool's own token: claims, events and plug-in modules of its own commands only.
        _own_token(profile, pool.token_key),
        # http steps may not call in-cluster addresses (the cluster's pod and service ranges).
        _value("WORKER_HTTP_DENY_CIDRS", ",".join(profile.network.worker_http_deny_cidrs)),
        *_nats(profile),
        _value("NATS_STREAM", COMMANDS_STREAM),
        _value("NATS_CONSUMER", pool.consumer),
        _value("NATS_FILTER_SUBJECT", pool.filter_subject),
        _value("NOETL_LOG_LEVEL", profile.log_level),
    ]
    if pool.wasm_cache_size is not None:
        env.append(_value("WASM_MODULE_CACHE_DIR", WASM_CACHE_MOUNT))
    return env


def env_names(env: list[EnvVar]) -> list[str]:
    return [str(item["name"]) for item in env]
