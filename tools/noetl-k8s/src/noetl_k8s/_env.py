"""The environment each workload is started with: the deploy side of ARCHITECTURE §9.

One function per workload returns Kubernetes ``EnvVar`` objects. Every name here is one
the services' config parsers read (a test checks it against their source), and
``compose.yaml`` names the same ones for the same service, apart from the differences
listed in :data:`K8S_EXPLICIT` and :data:`COMPOSE_ONLY`.
"""

from __future__ import annotations

from typing import Any

from ._spec import (
    COMMANDS_STREAM,
    CONTROL_API_PORT,
    PROJECTOR_METRICS_PORT,
    PUBLISHER_METRICS_PORT,
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
}

#: Set by compose's shared ``x-noetl-env`` block on services that do not read them.
COMPOSE_ONLY: dict[str, str] = {
    "NATS_URL": "the control-api never connects to NATS",
    "NOETL_EVENT_SHARD_COUNT": "only the control-api and the projector read it",
    "WORKER_HTTP_ALLOW_CIDRS": "loopback is opened to http steps in dev only; in a pod it holds sidecars' admin ports",
}


def _value(name: str, value: object) -> EnvVar:
    return {"name": name, "value": str(value)}


def _secret(profile: Profile, key: str, *, optional: bool = False) -> EnvVar:
    ref: dict[str, Any] = {"name": profile.secret_name, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": key, "valueFrom": {"secretKeyRef": ref}}


def _field(name: str, path: str) -> EnvVar:
    return {"name": name, "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": path}}}


def _nats(profile: Profile) -> list[EnvVar]:
    return [
        _value("NATS_URL", profile.nats.url),
        _secret(profile, "NATS_USER", optional=True),
        _secret(profile, "NATS_PASSWORD", optional=True),
    ]


def control_api_env(profile: Profile) -> list[EnvVar]:
    api = profile.control_api
    return [
        _secret(profile, "NOETL_DATABASE_URL"),
        _secret(profile, "NOETL_INTERNAL_API_TOKEN"),
        # Encrypts credentials and keychain values at rest.
        _secret(profile, "NOETL_CREDENTIALS_KEY"),
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
        _secret(profile, "NOETL_INTERNAL_API_TOKEN"),
        *_nats(profile),
        _value("PUBLISHER_METRICS_BIND", f"0.0.0.0:{PUBLISHER_METRICS_PORT}"),
        _value("NOETL_LOG_LEVEL", profile.log_level),
    ]


def projector_env(profile: Profile) -> list[EnvVar]:
    return [
        _value("NOETL_SERVER_URL", profile.server_url),
        _secret(profile, "NOETL_INTERNAL_API_TOKEN"),
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
        # Plug-in modules come from the internal registry (/api/internal/plugins), which
        # is token-gated; any pool may run a wasm step.
        _secret(profile, "NOETL_INTERNAL_API_TOKEN"),
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
