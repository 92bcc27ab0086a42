"""compose.yaml, the manifests and the services' own config parsers agree on env var names."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from noetl_k8s import PROFILES, base_profile, build_manifests
from noetl_k8s._compose import COMPOSE_TO_K8S, compare_env, compose_env, k8s_env
from noetl_k8s._env import COMPOSE_ONLY, K8S_EXPLICIT

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose.yaml"


#: Named by the deployment spec (architecture.md §9) and set here, but no service reads it yet.
#: A test below fails once one does, so this list only ever shrinks.
SPECIFIED_NOT_YET_READ: frozenset[str] = frozenset()


def _base_docs() -> list[dict[str, Any]]:
    return [d for docs in build_manifests(base_profile()).values() for d in docs]


@pytest.mark.skipif(not COMPOSE.exists(), reason="compose.yaml is not in the repository yet")
def test_compose_names_the_same_env_vars_as_the_manifests() -> None:
    compose = compose_env(COMPOSE.read_text())
    assert set(COMPOSE_TO_K8S) <= set(compose)
    assert compare_env(compose, k8s_env(_base_docs())) == []


def _names_read_by_services() -> set[str]:
    """Every string literal that looks like an env var name in the services' and lib's source."""
    names: set[str] = set()
    for src in [*ROOT.glob("services/*/src"), *ROOT.glob("libs/*/src")]:
        for path in src.rglob("*.py"):
            names |= set(re.findall(r"\"([A-Z][A-Z0-9_]{2,})\"", path.read_text()))
    return names


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_env_var_the_manifests_set_is_read_by_some_service(profile: str) -> None:
    read = _names_read_by_services()
    assert read, "no service source found"
    for docs in build_manifests(PROFILES[profile]()).values():
        for doc in docs:
            if doc["metadata"]["labels"].get("app.kubernetes.io/component") == "dev-infra":
                continue  # postgres and nats images, not ours
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
                unknown = {e["name"] for e in container.get("env", [])} - read - SPECIFIED_NOT_YET_READ
                assert not unknown, f"{doc['metadata']['name']}/{container['name']}: {sorted(unknown)}"


def test_the_allowlists_only_name_variables_the_services_read() -> None:
    read = _names_read_by_services()
    assert not SPECIFIED_NOT_YET_READ & read, "a service reads it now: drop it from SPECIFIED_NOT_YET_READ"
    assert set(K8S_EXPLICIT) <= read
    assert set(COMPOSE_ONLY) <= read


COMPOSE_SAMPLE = """
x-env: &env
  NOETL_SERVER_URL: http://control-api:8082
  NATS_URL: nats://nats:4222
services:
  migrate:
    environment: ["NOETL_DATABASE_URL=postgresql://x", "NOETL_LOG_LEVEL=INFO"]
  control-api:
    environment:
      <<: *env
      NOETL_DATABASE_URL: postgresql://x
      NOETL_API_BIND: 0.0.0.0:8082
      NOETL_CREDENTIALS_KEY: k
      NOETL_PLUGIN_SEED_DIR: /opt/noetl/plugins
      NOETL_ADMIN_TOKEN: a
      NOETL_PUBLISHER_TOKEN: p
      NOETL_PROJECTOR_TOKEN: r
      NOETL_WORKER_TOKEN_SHARED: w1
      NOETL_WORKER_TOKEN_SYSTEM: w2
      NOETL_EVENT_SHARD_COUNT: "1"
      NOETL_LOG_LEVEL: INFO
  outbox-publisher:
    environment:
      <<: *env
      NOETL_API_TOKEN: p
      PUBLISHER_METRICS_BIND: 0.0.0.0:9091
      NOETL_LOG_LEVEL: INFO
  projector:
    environment:
      <<: *env
      NOETL_API_TOKEN: r
      PROJECTOR_SHARD: "0"
      PROJECTOR_METRICS_BIND: 0.0.0.0:9092
      NOETL_EVENT_SHARD_COUNT: "1"
      NOETL_LOG_LEVEL: INFO
  worker-shared:
    environment:
      <<: *env
      NOETL_API_TOKEN: w1
      WORKER_ID: w1
      WORKER_POOL_NAME: shared
      WORKER_METRICS_BIND: 0.0.0.0:9090
      NOETL_LOG_LEVEL: INFO
  worker-system:
    environment:
      <<: *env
      NOETL_API_TOKEN: w2
      WORKER_ID: w2
      WORKER_POOL_NAME: system
      WORKER_METRICS_BIND: 0.0.0.0:9090
      WASM_MODULE_CACHE_DIR: /var/cache/noetl/wasm
      NOETL_LOG_LEVEL: INFO
"""


def test_compose_parsing_resolves_merges_and_list_form() -> None:
    env = compose_env(COMPOSE_SAMPLE)
    assert env["migrate"] == {"NOETL_DATABASE_URL", "NOETL_LOG_LEVEL"}
    assert "NOETL_API_TOKEN" in env["worker-system"]
    assert "NATS_URL" in env["control-api"]


def test_a_matching_compose_file_passes_and_a_drifted_one_fails() -> None:
    k8s = k8s_env(_base_docs())
    assert compare_env(compose_env(COMPOSE_SAMPLE), k8s) == []
    drifted = COMPOSE_SAMPLE.replace("PUBLISHER_METRICS_BIND", "OUTBOX_METRICS_BIND").replace(
        "      WASM_MODULE_CACHE_DIR: /var/cache/noetl/wasm\n", ""
    )
    assert compare_env(compose_env(drifted), k8s) == [
        "outbox-publisher: set in compose.yaml only: ['OUTBOX_METRICS_BIND']",
        "outbox-publisher: set in the manifests only: ['PUBLISHER_METRICS_BIND']",
        "worker-system: set in the manifests only: ['WASM_MODULE_CACHE_DIR']",
    ]
    # The publisher given the admin token as well: the manifests never do that.
    leaky = COMPOSE_SAMPLE.replace(
        "      NOETL_API_TOKEN: p\n", "      NOETL_API_TOKEN: p\n      NOETL_ADMIN_TOKEN: a\n"
    )
    assert compare_env(compose_env(leaky), k8s) == [
        "outbox-publisher: set in compose.yaml only: ['NOETL_ADMIN_TOKEN']"
    ]
    missing = COMPOSE_SAMPLE.replace("  projector:\n", "  projector-0:\n")
    assert "compose.yaml has no service 'projector'" in compare_env(compose_env(missing), k8s)
