"""The Helm chart stays consistent with the renderer (checked as text; no helm binary here)."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from noetl_k8s import (
    NetworkPeer,
    NetworkSpec,
    OidcSpec,
    Profile,
    base_profile,
    build_manifests,
    gke_profile,
    ingress_controller,
    kind_profile,
    validate_documents,
)
from noetl_k8s._gotemplate import ChartFailed
from noetl_k8s._helm import (
    CHART_DIR,
    Chart,
    allow_placeholders,
    check_actions,
    check_chart,
    check_template_shapes,
    check_values_refs,
    compare_chart,
    load_chart,
    profile_from_values,
    render_chart,
    values_from_profile,
)
from noetl_k8s._render import render_tree

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / CHART_DIR


def test_chart_passes_every_offline_check() -> None:
    assert check_chart(CHART) == []


def test_chart_metadata_and_templates_exist() -> None:
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert (meta["apiVersion"], meta["name"]) == ("v2", "noetl")
    chart = load_chart(CHART)
    assert set(chart.templates) == {
        "secrets.yaml",
        "rbac.yaml",
        "network-policies.yaml",
        "control-api.yaml",
        "outbox-publisher.yaml",
        "projector.yaml",
        "worker-pools.yaml",
        "scaledobjects.yaml",
    }


def test_default_values_leave_the_system_pool_disabled_and_unrendered() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["workerPools"]["system"]["enabled"] is False
    assert values["workerPools"]["shared"]["enabled"] is True
    docs = [d for ds in build_manifests(profile_from_values(values)).values() for d in ds]
    names = {d["metadata"]["name"] for d in docs}
    assert not {n for n in names if "system" in n}
    assert "noetl-worker-shared" in names


def test_values_with_the_system_pool_enabled_render_exactly_the_base_tree() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values["workerPools"]["system"]["enabled"] = True
    assert render_tree(profile_from_values(values)) == render_tree(base_profile())


@pytest.mark.parametrize("profile", [base_profile(), gke_profile()], ids=["base", "gke"])
def test_values_round_trip_to_the_same_profile(profile: object) -> None:
    assert isinstance(profile, type(base_profile()))
    back = profile_from_values(values_from_profile(profile), name=profile.name)
    assert back == profile


def test_values_change_is_visible_in_the_rendering() -> None:
    values = values_from_profile(base_profile())
    values["workerPools"]["system"]["keda"]["maxReplicas"] = 7
    so = next(
        d
        for d in build_manifests(profile_from_values(values))["keda.yaml"]
        if d["metadata"]["name"] == "noetl-worker-system-scaler"
    )
    assert so["spec"]["maxReplicaCount"] == 7


# --- broken templates are caught ------------------------------------------------------


def _chart_with(template: str, old: str, new: str) -> Chart:
    chart = load_chart(CHART)
    text = chart.templates[template]
    assert old in text, old
    templates = dict(chart.templates)
    templates[template] = text.replace(old, new, 1)
    return replace(chart, templates=templates)


def test_a_misspelt_yaml_key_is_caught() -> None:
    chart = _chart_with("scaledobjects.yaml", "minReplicaCount:", "minReplicaCont:")
    problems = check_template_shapes(chart)
    assert any("lacks: ['minReplicaCount']" in p for p in problems)
    assert any("never emits: ['minReplicaCont']" in p for p in problems)


def test_a_missing_env_var_is_caught() -> None:
    chart = _chart_with("worker-pools.yaml", "- name: NATS_FILTER_SUBJECT", "- name: NATS_FILTER")
    (problem,) = [p for p in check_template_shapes(chart) if "env names" in p]
    assert (
        "only in template ['NATS_FILTER']" in problem
        and "only in renderer ['NATS_FILTER_SUBJECT']" in problem
    )


def test_a_dropped_kind_is_caught() -> None:
    chart = _chart_with("control-api.yaml", "kind: HorizontalPodAutoscaler", "kind: HPA")
    assert any("kinds" in p for p in check_template_shapes(chart))


def test_unknown_values_paths_are_caught() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    text = "{{ .Values.controlApi.autoscaling.maxReplica }}\n{{- range $k, $p := .Values.workerPools }}{{ $p.keda.lag }}{{ end }}"
    text += "\n{{- $api := .Values.controlApi }}{{ $api.claimLease }}"
    problems = check_values_refs("t.yaml", text, values)
    assert problems == [
        "t.yaml: .Values.controlApi.autoscaling.maxReplica is not in values.yaml",
        "t.yaml: $api.claimLease (controlApi) is not in values.yaml",
        "t.yaml: $p.keda.lag missing for 'shared' in values.yaml",
        "t.yaml: $p.keda.lag missing for 'system' in values.yaml",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{- if .Values.a }}\nx: 1\n", "unclosed block(s) ['if']"),
        ("x: 1\n{{- end }}\n", "'end' without an open block"),
        ("x: {{ .Values.a | toYml }}\n", "unknown function or keyword 'toYml'"),
        ("x: {{ .Values.a }\n", "unbalanced"),
    ],
)
def test_malformed_actions_are_caught(text: str, expected: str) -> None:
    problems = check_actions("t.yaml", text)
    assert any(expected in p for p in problems), problems


def test_every_checked_in_template_balances() -> None:
    chart = load_chart(CHART)
    for name, text in chart.templates.items():
        assert check_actions(name, text) == []
    broken = copy.deepcopy(chart.templates["worker-pools.yaml"]).rsplit("{{- end }}", 1)[0]
    assert check_actions("worker-pools.yaml", broken) == ["worker-pools.yaml: unclosed block(s) ['range']"]


# --- executing the chart (with the project's Go-template interpreter) -----------------


def _gke_with_ingress_and_oidc() -> Profile:
    """GKE behind ingress-nginx and a load balancer range, OIDC on, no metrics scraper."""
    gke = gke_profile()
    network = replace(
        gke.network,
        api_clients=(
            ingress_controller("ingress-nginx", **{"app.kubernetes.io/name": "ingress-nginx"}),
            NetworkPeer(cidr="35.191.0.0/16"),
        ),
        monitoring_namespace="",
        worker_http_deny_cidrs=("10.4.0.0/14", "10.8.0.0/20"),
    )
    oidc = OidcSpec(
        issuer="https://accounts.example.com", audience="noetl", jwks_url="https://keys.example.com"
    )
    return replace(gke, network=network, control_api=replace(gke.control_api, oidc=oidc))


def _variants() -> list[tuple[str, dict[str, Any], Profile]]:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    kind_without_infra = replace(kind_profile(), dev_infra=False)
    no_policies = replace(base_profile(), network=NetworkSpec(policies=False))
    return [
        ("defaults", allow_placeholders(defaults), profile_from_values(defaults)),
        ("all-pools", allow_placeholders(values_from_profile(base_profile())), base_profile()),
        ("gke", allow_placeholders(values_from_profile(gke_profile())), gke_profile()),
        ("kind", values_from_profile(kind_without_infra), kind_without_infra),
        (
            "gke-ingress-oidc",
            allow_placeholders(values_from_profile(_gke_with_ingress_and_oidc())),
            _gke_with_ingress_and_oidc(),
        ),
        ("no-policies", allow_placeholders(values_from_profile(no_policies)), no_policies),
    ]


VARIANT_IDS = ["defaults", "all-pools", "gke", "kind", "gke-ingress-oidc", "no-policies"]


@pytest.mark.parametrize("variant", range(len(VARIANT_IDS)), ids=VARIANT_IDS)
def test_chart_output_equals_the_renderer(variant: int) -> None:
    _, values, profile = _variants()[variant]
    docs = render_chart(CHART, values)
    assert compare_chart(docs, profile) == []
    assert validate_documents(docs) == []


def test_chart_refuses_to_install_placeholder_secrets() -> None:
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    with pytest.raises(ChartFailed, match="CHANGE-ME placeholders"):
        render_chart(CHART, defaults)
    real = copy.deepcopy(defaults)
    real["secrets"]["values"] = {key: f"real-{key.lower()}" for key in defaults["secrets"]["values"]}
    (secret,) = [d for d in render_chart(CHART, real) if d["kind"] == "Secret"]
    assert secret["metadata"]["annotations"]["noetl.io/placeholder"] == "false"
    assert secret["stringData"]["NOETL_ADMIN_TOKEN"] == "real-noetl_admin_token"
    no_secret = copy.deepcopy(defaults)
    no_secret["secrets"]["create"] = False
    assert not [d for d in render_chart(CHART, no_secret) if d["kind"] == "Secret"]


def test_chart_defaults_render_no_system_pool_object() -> None:
    docs = render_chart(CHART, allow_placeholders(yaml.safe_load((CHART / "values.yaml").read_text())))
    assert [d["metadata"]["name"] for d in docs if "system" in d["metadata"]["name"]] == []
    assert any(d["metadata"]["name"] == "noetl-worker-shared-scaler" for d in docs)


def test_a_wrong_value_in_a_template_is_caught_only_by_executing_it() -> None:
    chart = _chart_with(
        "scaledobjects.yaml", "{{ $spec.keda.minReplicas }}", "{{ $spec.keda.cooldownPeriod }}"
    )
    assert check_template_shapes(chart) == []
    problems = compare_chart(
        render_chart(chart, allow_placeholders(values_from_profile(base_profile()))), base_profile()
    )
    assert problems == [
        "ScaledObject/noetl-worker-shared-scaler.spec.minReplicaCount: chart 120 != renderer 1",
        "ScaledObject/noetl-worker-system-scaler.spec.minReplicaCount: chart 120 != renderer 1",
    ]


def test_a_dropped_guard_renders_the_disabled_pool_and_is_caught() -> None:
    chart = _chart_with("worker-pools.yaml", "{{- if $spec.enabled }}", "{{- if true }}")
    defaults = allow_placeholders(yaml.safe_load((CHART / "values.yaml").read_text()))
    problems = compare_chart(render_chart(chart, defaults), profile_from_values(defaults))
    assert "Deployment/noetl-worker-system: rendered by the chart only" in problems


def _real_values() -> dict[str, Any]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    values["secrets"]["values"] = {key: f"real-{key.lower()}" for key in values["secrets"]["values"]}
    return dict(values)


def test_chart_refuses_the_retired_shared_token() -> None:
    values = _real_values()
    values["secrets"]["values"]["NOETL_INTERNAL_API_TOKEN"] = "x" * 64
    with pytest.raises(ChartFailed, match="NOETL_INTERNAL_API_TOKEN is gone"):
        render_chart(CHART, values)
    # Also when the chart does not create the Secret: the value is still a leftover to remove.
    values["secrets"]["create"] = False
    with pytest.raises(ChartFailed, match="NOETL_INTERNAL_API_TOKEN is gone"):
        render_chart(CHART, values)


def test_an_enabled_pool_needs_its_token_in_the_secret_values() -> None:
    values = _real_values()
    values["workerPools"]["python"] = copy.deepcopy(values["workerPools"]["shared"])
    with pytest.raises(ChartFailed, match="NOETL_WORKER_TOKEN_PYTHON is missing: worker pool python"):
        render_chart(CHART, values)
    values["secrets"]["values"]["NOETL_WORKER_TOKEN_PYTHON"] = "real-python"
    docs = render_chart(CHART, values)
    worker = next(
        d for d in docs if d["metadata"]["name"] == "noetl-worker-python" and d["kind"] == "Deployment"
    )
    (token,) = [
        e
        for e in worker["spec"]["template"]["spec"]["containers"][0]["env"]
        if e["name"] == "NOETL_API_TOKEN"
    ]
    assert token["valueFrom"]["secretKeyRef"]["key"] == "NOETL_WORKER_TOKEN_PYTHON"
    api = next(d for d in docs if d["metadata"]["name"] == "noetl-control-api" and d["kind"] == "Deployment")
    names = [e["name"] for e in api["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert "NOETL_WORKER_TOKEN_PYTHON" in names and "NOETL_WORKER_TOKEN_SYSTEM" not in names
    assert validate_documents(docs) == []


def test_a_templated_env_name_covers_only_names_with_its_prefix() -> None:
    chart = _chart_with(
        "control-api.yaml",
        "- name: NOETL_WORKER_TOKEN_{{ upper $pool }}",
        "- name: NOETL_POOL_TOKEN_{{ upper $pool }}",
    )
    (problem,) = [p for p in check_template_shapes(chart) if "env names" in p]
    assert "only in template ['NOETL_POOL_TOKEN_*']" in problem
    assert "only in renderer ['NOETL_WORKER_TOKEN_SHARED', 'NOETL_WORKER_TOKEN_SYSTEM']" in problem


def test_api_clients_outside_what_the_renderer_models_are_refused_by_the_round_trip() -> None:
    values = values_from_profile(base_profile())
    values["network"]["apiClients"] = [
        {"podSelector": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}
    ]
    with pytest.raises(ValueError, match="only matchLabels"):
        profile_from_values(values)
