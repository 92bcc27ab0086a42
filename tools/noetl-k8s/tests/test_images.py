"""The services' Dockerfiles, checked offline (no Docker engine here).

A small parser of the instructions the Dockerfiles use; each image must be multi-stage with a
uv builder installing from the frozen workspace lock, a pinned ``python:3.11.x-slim`` runtime, a
non-root USER, a HEALTHCHECK, EXPOSE of the port its README documents (and the manifests and
compose use), ENTRYPOINT the console script of its pyproject, and only documented ENV names.
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from noetl_k8s import PROFILES, build_manifests

ROOT = Path(__file__).resolve().parents[3]
SERVICES = sorted(p.parent.name for p in ROOT.glob("services/*/Dockerfile"))
#: The variable of each service whose default host:port is the port the image serves on.
BIND_VAR = {
    "control-api": "NOETL_API_BIND",
    "outbox-publisher": "PUBLISHER_METRICS_BIND",
    "projector": "PROJECTOR_METRICS_BIND",
    "system-worker": "WORKER_METRICS_BIND",
}
#: Set in the runtime stage for the interpreter, not read by the service: need no README row.
RUNTIME_ENV = frozenset({"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"})
PINNED_PYTHON = re.compile(r"^python:3\.11\.\d+-slim(-[a-z]+)?$")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for args in self.all("ENV"):
            words = shlex.split(args)
            if len(words) >= 2 and "=" not in words[0]:  # legacy `ENV NAME value`
                out[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                name, sep, value = word.partition("=")
                assert sep, f"ENV without '=': {args!r}"
                out[name] = value
        return out


def parse_dockerfile(text: str) -> list[Stage]:
    """Instructions per stage: comments dropped, backslash continuations joined."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue  # a comment inside a continuation
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "the Dockerfile ends inside a continuation"
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            words = [w for w in words if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        assert stages, f"{keyword} before the first FROM"
        stages[-1].instructions.append((keyword, args))
    return stages


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return list(value)


def readme_env_names(text: str) -> set[str]:
    """Names in the first column of the README's tables (`A` / `B` and `A`, `B` rows too)."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("|"):
            first = line.split("|")[1]
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", first))
    return names


def readme_port(text: str, bind_var: str) -> int:
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) > 2 and f"`{bind_var}`" in cells[1]:
            match = re.search(r":(\d+)`", cells[2])
            assert match, f"no default host:port in the {bind_var} row: {line}"
            return int(match.group(1))
    raise AssertionError(f"the README documents no {bind_var}")


def console_scripts(pyproject: Path) -> dict[str, str]:
    scripts: dict[str, str] = tomllib.loads(pyproject.read_text())["project"]["scripts"]
    return scripts


def check_dockerfile(text: str, *, readme: str, scripts: dict[str, str], bind_var: str) -> list[str]:
    """Every problem of one service's Dockerfile; empty when it is right."""
    problems: list[str] = []
    stages = parse_dockerfile(text)
    if len(stages) < 2:
        return ["not multi-stage (a builder and a runtime stage)"]
    names = {s.name for s in stages if s.name}
    for stage in stages:
        if stage.base in names:
            continue  # FROM an earlier stage
        tag = stage.base.rpartition("/")[2].partition(":")[2]
        if not tag or tag == "latest":
            problems.append(f"base image not pinned by tag: {stage.base}")
    builder, runtime = stages[:-1], stages[-1]
    if not PINNED_PYTHON.match(runtime.base):
        problems.append(f"runtime is not python:3.11.<patch>-slim: {runtime.base}")
    syncs = [a for s in builder for a in s.all("RUN") if "uv sync" in a]
    package = next(iter(scripts), "")
    if not syncs:
        problems.append("no `uv sync` in a builder stage")
    for args in syncs:
        for flag in ("--frozen", "--no-dev", f"--package {package}"):
            if flag not in args:
                problems.append(f"`uv sync` without {flag}: {args}")
    if not any("uv.lock" in a for s in builder for a in s.all("COPY")):
        problems.append("the builder does not copy uv.lock")
    if any("pip install" in a and "uv" not in a for a in runtime.all("RUN")):
        problems.append("the runtime stage installs with pip: install in the builder with uv")
    users = runtime.all("USER")
    if not users:
        problems.append("no USER in the final stage (it would run as root)")
    elif users[-1].split(":")[0] in ("root", "0"):
        problems.append(f"the final stage runs as root: USER {users[-1]}")
    if not any(not a.upper().startswith("NONE") for a in runtime.all("HEALTHCHECK")):
        problems.append("no HEALTHCHECK in the final stage")
    port = readme_port(readme, bind_var)
    exposed = {int(p.split("/")[0]) for a in runtime.all("EXPOSE") for p in a.split()}
    if exposed != {port}:
        problems.append(f"EXPOSE {sorted(exposed)} but the README documents port {port}")
    env = runtime.env()
    if env.get(bind_var, "").rpartition(":")[2] not in ("", str(port)):
        problems.append(f"{bind_var}={env[bind_var]} disagrees with EXPOSE {port}")
    undocumented = set(env) - RUNTIME_ENV - readme_env_names(readme)
    if undocumented:
        problems.append(f"ENV not in the README's env table: {sorted(undocumented)}")
    entrypoints = runtime.all("ENTRYPOINT")
    if not entrypoints:
        problems.append("no ENTRYPOINT")
    else:
        try:
            entry = _exec_form(entrypoints[-1])
        except (ValueError, AssertionError):
            problems.append(f"ENTRYPOINT is not exec form: {entrypoints[-1]}")
        else:
            if entry != [package]:
                problems.append(f"ENTRYPOINT {entry} is not the console script {package!r}")
    return problems


def _service(svc: str) -> tuple[str, dict[str, Any]]:
    base = ROOT / "services" / svc
    return (base / "Dockerfile").read_text(), {
        "readme": (base / "README.md").read_text(),
        "scripts": console_scripts(base / "pyproject.toml"),
        "bind_var": BIND_VAR[svc],
    }


def test_every_service_has_a_dockerfile() -> None:
    assert SERVICES == sorted(BIND_VAR)


@pytest.mark.parametrize("svc", SERVICES)
def test_the_dockerfile_is_right(svc: str) -> None:
    text, ctx = _service(svc)
    assert check_dockerfile(text, **ctx) == []


@pytest.mark.parametrize("svc", SERVICES)
def test_the_package_declares_exactly_one_console_script(svc: str) -> None:
    assert list(console_scripts(ROOT / "services" / svc / "pyproject.toml")) == [f"noetl-{svc}"]


def test_the_dockerfiles_share_one_pattern() -> None:
    """Identical once the service's name, port, bind variable and its own lines are blanked."""

    def shape(svc: str) -> list[str]:
        text, ctx = _service(svc)
        port = readme_port(ctx["readme"], ctx["bind_var"])
        out = []
        for line in text.splitlines():
            if line.startswith("#") or "plugins" in line or line.startswith("CMD ["):
                continue
            line = line.replace(f"noetl-{svc}", "<pkg>").replace(svc, "<svc>")
            out.append(line.replace(ctx["bind_var"], "<BIND>").replace(str(port), "<port>"))
        return out

    shapes = {svc: shape(svc) for svc in SERVICES}
    first = shapes[SERVICES[0]]
    for svc, lines in shapes.items():
        assert lines == first, svc


@pytest.mark.parametrize("svc", SERVICES)
@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_the_manifests_use_the_exposed_port(svc: str, profile: str) -> None:
    text, _ = _service(svc)
    exposed = {int(a) for a in parse_dockerfile(text)[-1].all("EXPOSE")}
    image = f"noetl-{svc}"
    seen: set[int] = set()
    for docs in build_manifests(PROFILES[profile]()).values():
        for doc in docs:
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                if re.search(rf"(^|/){image}(:|@|$)", container["image"]):
                    seen |= {p["containerPort"] for p in container.get("ports", [])}
    assert seen == exposed


COMPOSE_IMAGE = re.compile(r"^noetl/(?P<svc>[a-z-]+):")


def test_compose_uses_the_exposed_ports_and_the_entrypoints() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    checked = set()
    for name, service in compose["services"].items():
        match = COMPOSE_IMAGE.match(service.get("image", ""))
        if not match:
            continue
        svc = match.group("svc")
        text, ctx = _service(svc)
        runtime = parse_dockerfile(text)[-1]
        exposed = {int(a) for a in runtime.all("EXPOSE")}
        # compose's `command` is appended to the ENTRYPOINT: it must not repeat the script
        command = service.get("command", [])
        assert not command or command[0] not in ctx["scripts"], f"{name}: command repeats the ENTRYPOINT"
        if name == "migrate":
            continue
        published = {int(str(p).rpartition(":")[2]) for p in service.get("ports", [])}
        assert published == exposed, name
        bind = service["environment"].get(ctx["bind_var"], "")
        assert int(bind.rpartition(":")[2]) in exposed, (name, bind)
        checked.add(svc)
    assert checked == set(SERVICES)


GOOD = """\
# syntax=docker/dockerfile:1
FROM python:3.11.13-slim AS build
ENV UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install "uv==0.13.9"
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --no-dev --no-editable \\
    --package noetl-demo

FROM python:3.11.13-slim
ENV PATH=/opt/venv/bin:$PATH \\
    DEMO_BIND=0.0.0.0:9000
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
EXPOSE 9000
HEALTHCHECK CMD ["python", "-c", "print(1)"]
ENTRYPOINT ["noetl-demo"]
"""
README = """\
| Variable | Default | Meaning |
|---|---|---|
| `DEMO_BIND` | `0.0.0.0:9000` | listen address |
| `DEMO_A` / `DEMO_B` | — | two names in one row |
"""
CTX: dict[str, Any] = {"readme": README, "scripts": {"noetl-demo": "demo:main"}, "bind_var": "DEMO_BIND"}


def test_the_checker_passes_a_good_dockerfile() -> None:
    assert check_dockerfile(GOOD, **CTX) == []
    assert readme_env_names(README) == {"DEMO_BIND", "DEMO_A", "DEMO_B"}


BROKEN = {
    "latest": (GOOD.replace("FROM python:3.11.13-slim\n", "FROM python:latest\n"), "not pinned"),
    "untagged": (GOOD.replace("FROM python:3.11.13-slim AS", "FROM python AS"), "not pinned"),
    "unpatched runtime": (GOOD.replace("FROM python:3.11.13-slim\n", "FROM python:3.11-slim\n"), "runtime"),
    "single stage": ("FROM python:3.11.13-slim\nUSER 1\nEXPOSE 9000\n", "multi-stage"),
    "root": (GOOD.replace("USER 10001:10001", "USER root"), "as root"),
    "no user": (GOOD.replace("USER 10001:10001\n", ""), "no USER"),
    "no healthcheck": (GOOD.replace('HEALTHCHECK CMD ["python", "-c", "print(1)"]\n', ""), "HEALTHCHECK"),
    "healthcheck none": (
        GOOD.replace('HEALTHCHECK CMD ["python", "-c", "print(1)"]', "HEALTHCHECK NONE"),
        "HEALTHCHECK",
    ),
    "wrong port": (GOOD.replace("EXPOSE 9000", "EXPOSE 8000"), "EXPOSE [8000]"),
    "bind disagrees": (GOOD.replace("DEMO_BIND=0.0.0.0:9000", "DEMO_BIND=0.0.0.0:9999"), "disagrees"),
    "wrong entrypoint": (GOOD.replace('ENTRYPOINT ["noetl-demo"]', 'ENTRYPOINT ["demo"]'), "console script"),
    "shell entrypoint": (GOOD.replace('ENTRYPOINT ["noetl-demo"]', "ENTRYPOINT noetl-demo"), "exec form"),
    "no entrypoint": (GOOD.replace('ENTRYPOINT ["noetl-demo"]\n', ""), "no ENTRYPOINT"),
    "undocumented env": (GOOD.replace("    DEMO_BIND", "    DEMO_SECRET=x DEMO_BIND"), "DEMO_SECRET"),
    "not frozen": (GOOD.replace("--frozen ", ""), "--frozen"),
    "dev deps": (GOOD.replace("--no-dev ", ""), "--no-dev"),
    "whole workspace": (GOOD.replace("--package noetl-demo", "--all-packages"), "--package noetl-demo"),
    "pip, not uv": (GOOD.replace("RUN uv sync --frozen", "RUN pip install . # --frozen"), "no `uv sync`"),
    "no lock": (GOOD.replace("COPY pyproject.toml uv.lock ./", "COPY pyproject.toml ./"), "uv.lock"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_checker_catches_a_broken_dockerfile(case: str) -> None:
    text, expected = BROKEN[case]
    assert text != GOOD, "the broken variant must differ from the good one"
    problems = check_dockerfile(text, **CTX)
    assert any(expected in p for p in problems), problems


def test_a_comment_inside_a_continuation_is_dropped() -> None:
    stage = parse_dockerfile("FROM a:1\nENV A=1 \\\n# note\n    B=2\n")[0]
    assert stage.env() == {"A": "1", "B": "2"}


def test_the_root_readme_deploy_section_names_only_documented_variables() -> None:
    text = (ROOT / "README.md").read_text()
    assert "## Deploy" in text
    section = text.split("## Deploy", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`([A-Z][A-Z0-9_]{3,})`", section))
    documented = set().union(
        *(readme_env_names((ROOT / "services" / s / "README.md").read_text()) for s in SERVICES)
    )
    # the control-api README's first row, and what k8s/e2e-kind.sh reads or sets
    script = (ROOT / "k8s/e2e-kind.sh").read_text()
    documented |= {"NOETL_DATABASE_URL"} | set(re.findall(r"\b([A-Z][A-Z0-9_]{3,})\b", script))
    assert named, "the Deploy section names no variable"
    assert named - documented == set()
    # every secret the manifests reference is named there
    secrets = {
        ref["secretKeyRef"]["key"]
        for docs in build_manifests(PROFILES["base"]()).values()
        for doc in docs
        for c in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
        for e in c.get("env", [])
        if (ref := e.get("valueFrom")) and "secretKeyRef" in ref
    }
    assert secrets and secrets <= named, secrets - named
