"""The deployment contract of architecture.md §4/§9, read off the rendered objects."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from noetl_k8s import (
    PROFILES,
    NetworkSpec,
    OidcSpec,
    Profile,
    base_profile,
    build_manifests,
    gke_profile,
    kind_profile,
    validate_documents,
)

Doc = dict[str, Any]


def _docs(profile_name: str = "base") -> list[Doc]:
    return [d for docs in build_manifests(PROFILES[profile_name]()).values() for d in docs]


def _get(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


def _container(doc: Doc, name: str | None = None) -> Doc:
    containers = doc["spec"]["template"]["spec"]["containers"]
    return containers[0] if name is None else next(c for c in containers if c["name"] == name)


def _env(container: Doc) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


@pytest.mark.parametrize(
    ("pool", "low", "high", "lag", "activation"),
    [("system", 1, 5, "5", "1"), ("shared", 1, 20, "10", "1")],
)
def test_pool_scaledobjects(pool: str, low: int, high: int, lag: str, activation: str) -> None:
    so = _get(_docs(), "ScaledObject", f"noetl-worker-{pool}-scaler")
    spec = so["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": f"noetl-worker-{pool}",
    }
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (low, high)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "nats-jetstream"
    meta = trigger["metadata"]
    assert meta["stream"] == "NOETL_COMMANDS"
    assert meta["consumer"] == f"noetl_worker_pool_{pool}"
    assert (meta["lagThreshold"], meta["activationLagThreshold"]) == (lag, activation)
    assert meta["natsServerMonitoringEndpoint"].endswith(":8222")


@pytest.mark.parametrize("pool", ["shared", "system"])
def test_worker_pool_deployment_environment(pool: str) -> None:
    deployment = _get(_docs(), "Deployment", f"noetl-worker-{pool}")
    container = _container(deployment)
    env = _env(container)
    assert container["image"] == "noetl-system-worker:0.1.0"
    assert env["WORKER_POOL_NAME"] == pool
    assert env["NATS_CONSUMER"] == f"noetl_worker_pool_{pool}"
    assert env["NATS_FILTER_SUBJECT"] == f"noetl.commands.{pool}.>"
    assert env["WORKER_METRICS_BIND"] == "0.0.0.0:9090"
    assert env["NOETL_SERVER_URL"] == "http://noetl-control-api.noetl.svc.cluster.local:8082"
    assert env["NATS_URL"].startswith("nats://")
    assert env["WORKER_ID"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == f"noetl-worker-{pool}"
    assert "replicas" not in deployment["spec"]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9090",
        "prometheus.io/path": "/metrics",
    }
    assert pod["terminationGracePeriodSeconds"] > int(env["WORKER_SHUTDOWN_GRACE_SECONDS"])


def test_only_the_system_pool_has_a_wasm_cache_volume() -> None:
    docs = _docs()
    system = _get(docs, "Deployment", "noetl-worker-system")
    shared = _get(docs, "Deployment", "noetl-worker-shared")
    volumes = {v["name"]: v for v in system["spec"]["template"]["spec"]["volumes"]}
    assert volumes["wasm-cache"] == {"name": "wasm-cache", "emptyDir": {"sizeLimit": "512Mi"}}
    mounts = {m["name"]: m["mountPath"] for m in _container(system)["volumeMounts"]}
    assert mounts["wasm-cache"] == _env(_container(system))["WASM_MODULE_CACHE_DIR"]
    assert "wasm-cache" not in {v["name"] for v in shared["spec"]["template"]["spec"]["volumes"]}
    assert "WASM_MODULE_CACHE_DIR" not in _env(_container(shared))


def test_control_api_probes_service_migration_and_scaling() -> None:
    docs = _docs()
    deployment = _get(docs, "Deployment", "noetl-control-api")
    container = _container(deployment, "control-api")
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["ports"] == [{"name": "http", "containerPort": 8082, "protocol": "TCP"}]
    (migrate,) = deployment["spec"]["template"]["spec"]["initContainers"]
    assert migrate["command"] == ["noetl-control-api", "migrate"]
    assert migrate["image"] == container["image"]
    service = _get(docs, "Service", "noetl-control-api")
    assert service["spec"]["ports"][0]["port"] == 8082
    hpa = _get(docs, "HorizontalPodAutoscaler", "noetl-control-api")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 3)


def test_projector_is_a_statefulset_whose_ordinal_is_its_shard() -> None:
    for name in PROFILES:
        profile = PROFILES[name]()
        docs = _docs(name)
        sts = _get(docs, "StatefulSet", "noetl-projector")
        env = _env(_container(sts))
        assert env["PROJECTOR_SHARD"] == {
            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels['apps.kubernetes.io/pod-index']"}
        }
        assert sts["spec"]["replicas"] == profile.projector.replicas
        assert env["NOETL_EVENT_SHARD_COUNT"] == str(profile.projector.replicas)
        api_env = _env(_container(_get(docs, "Deployment", "noetl-control-api"), "control-api"))
        assert api_env["NOETL_EVENT_SHARD_COUNT"] == str(profile.projector.replicas)
        assert sts["spec"]["serviceName"] == _get(docs, "Service", "noetl-projector")["metadata"]["name"]


def test_every_workload_runs_non_root_read_only_with_limits_and_its_own_account() -> None:
    docs = _docs()
    pods = [d for d in docs if d["kind"] in ("Deployment", "StatefulSet")]
    assert len(pods) == 5
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    used = set()
    for doc in pods:
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        used.add(pod["serviceAccountName"])
        for c in [*pod.get("initContainers", []), *pod["containers"]]:
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert set(c["resources"]) == {"requests", "limits"}
    assert used == accounts


TOKEN_KEYS = {
    "NOETL_ADMIN_TOKEN",
    "NOETL_PUBLISHER_TOKEN",
    "NOETL_PROJECTOR_TOKEN",
    "NOETL_WORKER_TOKEN_SHARED",
    "NOETL_WORKER_TOKEN_SYSTEM",
}


def test_secrets_are_placeholders_outside_kind() -> None:
    for profile in (base_profile(), gke_profile()):
        secret = _get(_docs(profile.name), "Secret", "noetl-secrets")
        assert secret["metadata"]["annotations"]["noetl.io/placeholder"] == "true"
        assert set(secret["stringData"]) == {
            "NOETL_DATABASE_URL",
            "NOETL_CREDENTIALS_KEY",
            "NATS_USER",
            "NATS_PASSWORD",
            *TOKEN_KEYS,
        }
        assert all("CHANGE-ME" in value for value in secret["stringData"].values())
        # Shorter than a configured token may be: a control-api given one refuses to start.
        assert all(len(secret["stringData"][key]) < 32 for key in TOKEN_KEYS)


def test_kind_tokens_are_distinct_and_long_enough_for_the_control_api() -> None:
    values = _get(_docs("kind"), "Secret", "noetl-secrets")["stringData"]
    tokens = [values[key] for key in TOKEN_KEYS]
    assert len(set(tokens)) == len(tokens)
    assert all(len(token) >= 32 and token.startswith("noetl_") for token in tokens)


def _secret_refs(container: Doc) -> dict[str, str]:
    """env name → Secret key, for the env vars read from the Secret."""
    return {
        e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_each_service_gets_only_its_own_token_and_the_control_api_all_of_them(profile: str) -> None:
    docs = _docs(profile)
    api = _get(docs, "Deployment", "noetl-control-api")
    api_refs = _secret_refs(_container(api, "control-api"))
    assert {k: v for k, v in api_refs.items() if "TOKEN" in k} == {key: key for key in TOKEN_KEYS}
    (migrate,) = api["spec"]["template"]["spec"]["initContainers"]
    assert set(_secret_refs(migrate)) == {"NOETL_DATABASE_URL"}
    own = {
        ("Deployment", "noetl-outbox-publisher"): "NOETL_PUBLISHER_TOKEN",
        ("StatefulSet", "noetl-projector"): "NOETL_PROJECTOR_TOKEN",
        ("Deployment", "noetl-worker-shared"): "NOETL_WORKER_TOKEN_SHARED",
        ("Deployment", "noetl-worker-system"): "NOETL_WORKER_TOKEN_SYSTEM",
    }
    for (kind, name), key in own.items():
        refs = _secret_refs(_container(_get(docs, kind, name)))
        assert {k: v for k, v in refs.items() if "TOKEN" in k or "TOKEN" in v} == {"NOETL_API_TOKEN": key}
    for doc in docs:
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert "NOETL_INTERNAL_API_TOKEN" not in {e["name"] for e in c.get("env", [])}
            assert "envFrom" not in c


def test_the_bootstrap_admin_token_may_be_dropped_from_the_secret() -> None:
    api = _container(_get(_docs(), "Deployment", "noetl-control-api"), "control-api")
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in api["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs["NOETL_ADMIN_TOKEN"].get("optional") is True
    assert not any(refs[key].get("optional") for key in TOKEN_KEYS - {"NOETL_ADMIN_TOKEN"})


def test_a_pool_added_to_a_profile_gets_its_own_token_key_everywhere() -> None:
    base = base_profile()
    python = replace(base.pool("shared"), pool="python")
    profile = replace(
        base,
        worker_pools=(*base.worker_pools, python),
        secret_values=(*base.secret_values, ("NOETL_WORKER_TOKEN_PYTHON", "t" * 40)),
    )
    docs = [d for ds in build_manifests(profile).values() for d in ds]
    worker = _secret_refs(_container(_get(docs, "Deployment", "noetl-worker-python")))
    assert worker["NOETL_API_TOKEN"] == "NOETL_WORKER_TOKEN_PYTHON"
    api = _secret_refs(_container(_get(docs, "Deployment", "noetl-control-api"), "control-api"))
    assert api["NOETL_WORKER_TOKEN_PYTHON"] == "NOETL_WORKER_TOKEN_PYTHON"
    assert validate_documents(docs) == []
    with pytest.raises(ValueError, match="lower-case"):
        replace(python, pool="Py_thon")


@pytest.mark.parametrize(
    ("profile", "cidrs"), [("base", ""), ("gke", ""), ("kind", "10.244.0.0/16,10.96.0.0/12")]
)
def test_workers_are_told_the_cluster_ranges_their_http_steps_may_not_call(profile: str, cidrs: str) -> None:
    for pool in ("shared", "system"):
        env = _env(_container(_get(_docs(profile), "Deployment", f"noetl-worker-{pool}")))
        assert env["WORKER_HTTP_DENY_CIDRS"] == cidrs
    with pytest.raises(ValueError):
        NetworkSpec(worker_http_deny_cidrs=("10.96.0.1/12",))


def test_oidc_settings_reach_the_control_api_only_when_an_issuer_is_set() -> None:
    def oidc_env(profile: Profile) -> dict[str, Any]:
        docs = [d for ds in build_manifests(profile).values() for d in ds]
        env = _env(_container(_get(docs, "Deployment", "noetl-control-api"), "control-api"))
        return {k: v for k, v in env.items() if k.startswith("NOETL_OIDC_")}

    base = base_profile()
    assert oidc_env(base) == {}
    oidc = OidcSpec(issuer="https://id.example.com", audience="noetl")
    assert oidc_env(replace(base, control_api=replace(base.control_api, oidc=oidc))) == {
        "NOETL_OIDC_ISSUER": "https://id.example.com",
        "NOETL_OIDC_AUDIENCE": "noetl",
        "NOETL_OIDC_ROLE_CLAIM": "noetl_role",
        "NOETL_OIDC_ALGORITHMS": "RS256,ES256",
    }
    with pytest.raises(ValueError, match="https"):
        OidcSpec(issuer="http://id.example.com", audience="noetl")


def test_every_disruptable_workload_has_a_pdb_except_on_kind() -> None:
    base = {d["metadata"]["name"] for d in _docs() if d["kind"] == "PodDisruptionBudget"}
    assert base == {
        "noetl-control-api",
        "noetl-outbox-publisher",
        "noetl-projector",
        "noetl-worker-shared",
        "noetl-worker-system",
    }
    assert not [d for d in _docs("kind") if d["kind"] == "PodDisruptionBudget"]


def test_kind_overlay_uses_local_images_and_brings_postgres_and_nats() -> None:
    profile = kind_profile()
    docs = _docs("kind")
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                assert c["imagePullPolicy"] == "IfNotPresent"
    assert _container(_get(docs, "Deployment", "noetl-worker-system"))["image"] == "noetl-system-worker:dev"
    nats = _get(docs, "Service", "nats")
    assert {p["port"] for p in nats["spec"]["ports"]} == {4222, 8222}
    assert _get(docs, "StatefulSet", "postgres")
    so = _get(docs, "ScaledObject", "noetl-worker-system-scaler")
    assert (
        so["spec"]["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"]
        == profile.nats.monitoring_endpoint
    )
    assert profile.nats.monitoring_endpoint == "nats.noetl.svc.cluster.local:8222"
    assert "replicas" in _get(docs, "Deployment", "noetl-control-api")["spec"]


def test_gke_overlay_pulls_from_the_registry() -> None:
    docs = _docs("gke")
    for doc in docs:
        if doc["kind"] in ("Deployment", "StatefulSet"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                assert c["image"].startswith("us-docker.pkg.dev/noetl-project/noetl/noetl-")
                assert c["imagePullPolicy"] == "Always"
    assert _get(docs, "StatefulSet", "noetl-projector")["spec"]["replicas"] == 4
