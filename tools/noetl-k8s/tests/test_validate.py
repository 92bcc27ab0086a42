"""Offline validation: every rendered manifest passes, and broken ones are caught."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from noetl_k8s import (
    PROFILES,
    KedaSpec,
    base_profile,
    build_manifests,
    lint_documents,
    load_documents,
    validate_documents,
    validate_manifest,
)
from noetl_k8s.__main__ import main
from noetl_k8s._render import TREE_DIRS

ROOT = Path(__file__).resolve().parents[3]

CASES = [
    (profile, file) for profile in sorted(PROFILES) for file in sorted(build_manifests(PROFILES[profile]()))
]


@pytest.mark.parametrize(("profile", "file"), CASES, ids=[f"{p}/{f}" for p, f in CASES])
def test_every_rendered_manifest_passes_its_schema(profile: str, file: str) -> None:
    docs = build_manifests(PROFILES[profile]())[file]
    assert docs
    for doc in docs:
        assert validate_manifest(doc) == []


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_rendered_tree_passes_the_whole_tree_rules(profile: str) -> None:
    docs = [doc for docs in build_manifests(PROFILES[profile]()).values() for doc in docs]
    assert validate_documents(docs) == []


@pytest.mark.parametrize("tree", sorted(TREE_DIRS.values()))
def test_checked_in_trees_validate_from_disk(tree: str) -> None:
    docs = [
        d
        for p in sorted((ROOT / tree).glob("*.yaml"))
        if p.name != "kustomization.yaml"
        for d in load_documents(p.read_text())
    ]
    assert len(docs) > 20
    assert validate_documents(docs) == []


def test_cli_check_passes_on_the_repository(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--root", str(ROOT), "check"])
    assert capsys.readouterr().out.strip() == "ok"


# --- broken manifests are caught ------------------------------------------------------


def _tree() -> dict[str, list[dict[str, Any]]]:
    return copy.deepcopy(build_manifests(base_profile()))


def _flat(files: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [doc for docs in files.values() for doc in docs]


def test_wrong_type_for_replicas_is_a_schema_error() -> None:
    publisher = _tree()["outbox-publisher.yaml"][0]
    publisher["spec"]["replicas"] = "2"
    (error,) = validate_manifest(publisher)
    assert "spec.replicas" in error and "not of type 'integer'" in error


def test_unknown_field_is_a_schema_error() -> None:
    projector = _tree()["projector.yaml"][1]
    projector["spec"]["template"]["spec"]["containers"][0]["imagePullPolicie"] = "Always"
    (error,) = validate_manifest(projector)
    assert "'imagePullPolicie' was unexpected" in error


def test_unknown_kind_is_reported() -> None:
    (error,) = validate_manifest({"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "x"}})
    assert "Widget" in error


def test_scaledobject_trigger_metadata_must_be_strings() -> None:
    so = _tree()["keda.yaml"][0]
    so["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 10
    (error,) = validate_manifest(so)
    assert "lagThreshold" in error and "not of type 'string'" in error


def test_scaledobject_trigger_without_type_or_with_misspelt_key_is_rejected() -> None:
    so = _tree()["keda.yaml"][1]
    trigger = so["spec"]["triggers"][0]
    del trigger["type"]
    trigger["metdata"] = trigger.pop("metadata")
    errors = validate_manifest(so)
    assert any("'type' is a required property" in e for e in errors)
    assert any("'metadata' is a required property" in e for e in errors)
    assert any("'metdata' was unexpected" in e for e in errors)


def test_scaledobject_unknown_spec_field_is_rejected() -> None:
    so = _tree()["keda.yaml"][0]
    so["spec"]["maxReplicas"] = 3
    (error,) = validate_manifest(so)
    assert "'maxReplicas' was unexpected" in error


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda m: m.pop("consumer"), "lacks consumer"),
        (lambda m: m.update(lagThreshold="0"), "lagThreshold must be a positive integer"),
        (lambda m: m.update(activationLagThreshold="-1"), "activationLagThreshold must be a non-negative"),
        (lambda m: m.update(consumer="noetl_worker_pool_python"), "!= noetl-worker-shared NATS_CONSUMER"),
        (lambda m: m.update(stream="NOETL_EVENTS"), "stream 'NOETL_EVENTS'"),
    ],
    ids=["no-consumer", "zero-lag", "negative-activation", "wrong-consumer", "wrong-stream"],
)
def test_schema_valid_but_wrong_trigger_is_caught_by_the_tree_rules(mutate: Any, expected: str) -> None:
    files = _tree()
    mutate(files["keda.yaml"][0]["spec"]["triggers"][0]["metadata"])
    docs = _flat(files)
    assert all(validate_manifest(d) == [] for d in docs)
    problems = lint_documents(docs)
    assert len(problems) == 1 and expected in problems[0], problems


def test_trigger_of_another_type_and_a_dangling_target_are_caught() -> None:
    files = _tree()
    files["keda.yaml"][0]["spec"]["triggers"][0]["type"] = "nats"
    files["keda.yaml"][1]["spec"]["scaleTargetRef"]["name"] = "noetl-worker-python"
    problems = lint_documents(_flat(files))
    assert any("is not nats-jetstream" in p for p in problems)
    assert any("names no Deployment in the tree ('noetl-worker-python')" in p for p in problems)


def test_replicas_on_an_autoscaled_deployment_is_caught() -> None:
    files = _tree()
    files["worker-system.yaml"][0]["spec"]["replicas"] = 2
    files["control-api.yaml"][1]["spec"]["replicas"] = 2
    problems = lint_documents(_flat(files))
    assert problems == [
        "Deployment/noetl-control-api: sets spec.replicas although an autoscaler owns it",
        "Deployment/noetl-worker-system: sets spec.replicas although an autoscaler owns it",
    ]


def test_pod_rules_catch_selector_secret_security_and_volume_mistakes() -> None:
    files = _tree()
    worker = files["worker-shared.yaml"][0]
    worker["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "other"
    container = worker["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"]["readOnlyRootFilesystem"] = False
    container["volumeMounts"].append({"name": "wasm-cache", "mountPath": "/x"})
    container["env"][7]["valueFrom"]["secretKeyRef"]["key"] = "NOETL_INTERNAL_TOKEN"
    del files["projector.yaml"][1]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    spread = files["outbox-publisher.yaml"][0]["spec"]["template"]["spec"]["topologySpreadConstraints"][1]
    spread["labelSelector"]["matchLabels"]["app.kubernetes.io/name"] = "noetl-projector"
    problems = lint_documents(_flat(files))
    assert any("selector.matchLabels does not match" in p for p in problems)
    assert any("readOnlyRootFilesystem must be true" in p for p in problems)
    assert any("mounts undefined volume 'wasm-cache'" in p for p in problems)
    assert any("missing secret key noetl-secrets/NOETL_INTERNAL_TOKEN" in p for p in problems)
    assert any("projector container projector: needs resource requests and limits" in p for p in problems)
    assert any("outbox-publisher: topologySpreadConstraints select other pods" in p for p in problems)
    assert len(problems) == 6, problems


def _env_var(doc: dict[str, Any], name: str) -> dict[str, Any]:
    env = doc["spec"]["template"]["spec"]["containers"][0]["env"]
    return next(e for e in env if e["name"] == name)


def test_a_service_given_another_roles_token_is_caught() -> None:
    files = _tree()
    # A worker handed the publisher's token, the projector the admin token under its own name.
    _env_var(files["worker-shared.yaml"][0], "NOETL_API_TOKEN")["valueFrom"]["secretKeyRef"]["key"] = (
        "NOETL_PUBLISHER_TOKEN"
    )
    projector = files["projector.yaml"][1]
    projector["spec"]["template"]["spec"]["containers"][0]["env"].append(
        {
            "name": "NOETL_ADMIN_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "noetl-secrets", "key": "NOETL_ADMIN_TOKEN"}},
        }
    )
    problems = lint_documents(_flat(files))
    assert problems == [
        "StatefulSet/noetl-projector container projector: env NOETL_ADMIN_TOKEN reads NOETL_ADMIN_TOKEN; "
        "a service gets only its own token, as NOETL_API_TOKEN (the control-api: each under its own name)",
        "Deployment/noetl-worker-shared container worker: env NOETL_API_TOKEN reads NOETL_PUBLISHER_TOKEN; "
        "a service gets only its own token, as NOETL_API_TOKEN (the control-api: each under its own name)",
    ]


def test_the_retired_shared_token_and_envfrom_the_secret_are_caught() -> None:
    files = _tree()
    files["secrets.yaml"][0]["stringData"]["NOETL_INTERNAL_API_TOKEN"] = "x" * 64
    api = files["control-api.yaml"][1]["spec"]["template"]["spec"]["containers"][0]
    api["env"].append(
        {
            "name": "NOETL_INTERNAL_API_TOKEN",
            "valueFrom": {"secretKeyRef": {"name": "noetl-secrets", "key": "NOETL_INTERNAL_API_TOKEN"}},
        }
    )
    publisher = files["outbox-publisher.yaml"][0]["spec"]["template"]["spec"]["containers"][0]
    publisher["envFrom"] = [{"secretRef": {"name": "noetl-secrets"}}]
    problems = lint_documents(_flat(files))
    assert problems == [
        "Secret/noetl-secrets: holds NOETL_INTERNAL_API_TOKEN, which is gone (docs/security.md §2)",
        "Deployment/noetl-control-api container control-api: sets NOETL_INTERNAL_API_TOKEN, which is gone; "
        "the control-api refuses to start with it",
        "Deployment/noetl-outbox-publisher container outbox-publisher: envFrom a Secret hands it every key, "
        "other roles' tokens included",
    ]


def test_shard_count_must_follow_projector_replicas() -> None:
    files = _tree()
    files["projector.yaml"][1]["spec"]["replicas"] = 3
    problems = lint_documents(_flat(files))
    assert problems == [
        "Deployment/noetl-control-api: NOETL_EVENT_SHARD_COUNT 2 != projector replicas 3",
        "StatefulSet/noetl-projector: NOETL_EVENT_SHARD_COUNT 2 != projector replicas 3",
    ]


def test_rbac_rules_refuse_wildcards_secrets_and_cluster_roles() -> None:
    files = _tree()
    role = next(d for d in files["rbac.yaml"] if d["kind"] == "Role")
    role["rules"] = [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]
    files["rbac.yaml"].append(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "x"},
            "rules": [],
        }
    )
    problems = lint_documents(_flat(files))
    assert sorted(problems) == [
        "ClusterRole/x: cluster-wide RBAC is not allowed; use a namespaced Role",
        "Role/noetl-runtime: grants access to Secrets",
        "Role/noetl-runtime: wildcard in verbs",
    ]


def test_cli_validate_fails_on_a_broken_tree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (ROOT / "k8s/base/outbox-publisher.yaml").read_text().replace("replicas: 2", "replicas: two")
    (tmp_path / "outbox-publisher.yaml").write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["validate", str(tmp_path)])
    assert exc.value.code == 1
    assert "spec.replicas: 'two' is not of type 'integer'" in capsys.readouterr().err


def test_keda_spec_rejects_impossible_bounds() -> None:
    with pytest.raises(ValueError):
        KedaSpec(min_replicas=3, max_replicas=2, lag_threshold=5, activation_lag_threshold=1)
    with pytest.raises(ValueError):
        KedaSpec(min_replicas=1, max_replicas=5, lag_threshold=0, activation_lag_threshold=1)
