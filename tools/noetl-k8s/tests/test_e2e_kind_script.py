"""k8s/e2e-kind.sh cannot run here (no docker/kind); check it parses and names what the kind tree has."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from noetl_k8s import build_manifests, kind_profile

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "k8s/e2e-kind.sh"


def _array(name: str) -> list[str]:
    match = re.search(rf"^{name}=\(([^)]*)\)", SCRIPT.read_text(), re.M)
    assert match, name
    return match.group(1).split()


def _kind_docs() -> list[dict[str, Any]]:
    return [d for docs in build_manifests(kind_profile()).values() for d in docs]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_script_builds_exactly_the_images_the_kind_tree_runs() -> None:
    built = {f"noetl-{svc}:dev" for svc in _array("SERVICES")}
    used = {
        c["image"]
        for d in _kind_docs()
        if d["kind"] in ("Deployment", "StatefulSet")
        and d["metadata"]["labels"]["app.kubernetes.io/component"] != "dev-infra"
        for c in [
            *d["spec"]["template"]["spec"].get("initContainers", []),
            *d["spec"]["template"]["spec"]["containers"],
        ]
    }
    assert built == used


def test_script_waits_for_every_workload_of_the_kind_tree() -> None:
    waited = set(_array("INFRA")) | set(_array("WORKLOADS"))
    workloads = {
        f"{d['kind'].lower()}/{d['metadata']['name']}"
        for d in _kind_docs()
        if d["kind"] in ("Deployment", "StatefulSet")
    }
    assert waited == workloads


def test_port_forwards_and_database_url_match_the_kind_tree() -> None:
    text = SCRIPT.read_text()
    services = {d["metadata"]["name"]: d for d in _kind_docs() if d["kind"] == "Service"}
    for name, port in re.findall(r"port-forward svc/([\w-]+) \d+:(\d+)", text):
        assert int(port) in {p["port"] for p in services[name]["spec"]["ports"]}
    secret = next(d for d in _kind_docs() if d["kind"] == "Secret")
    in_cluster = secret["stringData"]["NOETL_DATABASE_URL"]
    credentials = in_cluster.split("//", 1)[1].split("@", 1)[0]
    assert f"postgresql://{credentials}@127.0.0.1:15432/noetl" in text


def test_the_tests_use_the_kind_secrets_bootstrap_admin_token() -> None:
    secret = next(d for d in _kind_docs() if d["kind"] == "Secret")
    (token,) = re.findall(r"^NOETL_API_TOKEN=(\S+) \\$", SCRIPT.read_text(), re.M)
    assert token == secret["stringData"]["NOETL_ADMIN_TOKEN"]
