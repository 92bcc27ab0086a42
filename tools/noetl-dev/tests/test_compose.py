"""compose.yaml runs the same topology with the same variables as the dev stack."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from noetl_dev._services import BIND_VARIABLES, SERVICES, common_env, new_tokens, service_env

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "compose.yaml"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data["services"]


def _argv(service: dict[str, Any]) -> list[str]:
    """What the container runs: the image's ENTRYPOINT (its Dockerfile's) + compose's command."""
    match = re.match(r"noetl/([a-z-]+):", service["image"])
    assert match, service["image"]
    dockerfile = (ROOT / "services" / match.group(1) / "Dockerfile").read_text()
    entrypoints = re.findall(r"^ENTRYPOINT (\[.*\])$", dockerfile, re.M)
    assert len(entrypoints) == 1, match.group(1)
    entrypoint: list[str] = json.loads(entrypoints[0])
    return [*entrypoint, *service.get("command", [])]


def test_compose_has_every_dev_stack_service_with_its_command() -> None:
    services = _compose()
    for name, (script, args) in SERVICES.items():
        assert _argv(services[name]) == [script, *args], name
    assert _argv(services["migrate"]) == ["noetl-control-api", "migrate"]


def test_compose_sets_every_variable_the_dev_stack_sets() -> None:
    services = _compose()
    shared = set(common_env(server_url="u", nats_url="n", shard_count=1))
    for name in SERVICES:
        wanted = shared | set(service_env(name, port=1, database_url="d", tokens=new_tokens()))
        assert wanted <= set(services[name]["environment"]), (
            name,
            wanted - set(services[name]["environment"]),
        )


def test_only_the_control_api_and_migrate_see_the_database() -> None:
    services = _compose()
    with_db = {name for name, s in services.items() if "NOETL_DATABASE_URL" in s.get("environment", {})}
    assert with_db == {"control-api", "migrate"}


def test_each_service_is_health_checked_on_its_bind_port() -> None:
    services = _compose()
    for name, variable in BIND_VARIABLES.items():
        port = services[name]["environment"][variable].rsplit(":", 1)[1]
        assert f"127.0.0.1:{port}/readyz" in " ".join(services[name]["healthcheck"]["test"]), name


def test_background_services_wait_for_a_healthy_control_api_and_nats() -> None:
    services = _compose()
    assert services["control-api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("outbox-publisher", "projector", "worker-shared", "worker-system"):
        depends = services[name]["depends_on"]
        assert depends["control-api"]["condition"] == "service_healthy", name
        assert depends["nats"]["condition"] == "service_healthy", name


def test_each_service_gets_only_its_own_token() -> None:
    tokens = new_tokens()
    control_api = service_env("control-api", port=1, database_url="d", tokens=tokens)
    assert {k: control_api[k] for k in tokens} == tokens and "NOETL_API_TOKEN" not in control_api
    for name, variable in (
        ("outbox-publisher", "NOETL_PUBLISHER_TOKEN"),
        ("projector", "NOETL_PROJECTOR_TOKEN"),
        ("worker-shared", "NOETL_WORKER_TOKEN_SHARED"),
        ("worker-system", "NOETL_WORKER_TOKEN_SYSTEM"),
    ):
        env = service_env(name, port=1, database_url="d", tokens=tokens)
        assert env["NOETL_API_TOKEN"] == tokens[variable], name
        assert not set(tokens) & set(env), name  # no other role's token, under any name
        assert sum(value in tokens.values() for value in env.values()) == 1, name
