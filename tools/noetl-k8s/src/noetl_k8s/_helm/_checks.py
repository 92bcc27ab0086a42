"""Checks of the chart templates as text: actions balance, functions are known, every
``.Values`` path exists, and each template names exactly the kinds, the YAML keys and the env
vars that the renderer emits for the same workloads."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from .._build import build_manifests
from .._env import env_names
from .._profiles import base_profile
from .._spec import OidcSpec, Profile

#: Chart template → rendered files of the base tree it must correspond to.
TEMPLATE_FILES: dict[str, tuple[str, ...]] = {
    "secrets.yaml": ("secrets.yaml",),
    "rbac.yaml": ("rbac.yaml",),
    "network-policies.yaml": ("network-policies.yaml",),
    "control-api.yaml": ("control-api.yaml",),
    "outbox-publisher.yaml": ("outbox-publisher.yaml",),
    "projector.yaml": ("projector.yaml",),
    "worker-pools.yaml": ("worker-shared.yaml", "worker-system.yaml"),
    "scaledobjects.yaml": ("keda.yaml",),
}

#: Go template functions and keywords the chart may use (Helm builtins and Sprig).
KNOWN_FUNCTIONS = frozenset(
    {
        "if", "else", "end", "range", "define", "include", "template", "with",
        "toYaml", "nindent", "indent", "quote", "default", "printf", "trunc", "trimSuffix",
        "eq", "ne", "and", "or", "not", "required", "int", "toString", "b64enc", "list", "dict",
        "hasKey", "lower", "upper", "join", "replace", "index", "empty", "ternary", "contains", "add",
        "append", "fail",
    }
)  # fmt: skip

_ACTION = re.compile(r"{{-?\s*(.*?)\s*-?}}", re.S)
_VALUES_REF = re.compile(r"\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
_RANGE_BIND = re.compile(r"range\s+\$\w+\s*,\s*(\$\w+)\s*:=\s*\$?\.Values((?:\.[A-Za-z_]\w*)+)")
_ASSIGN = re.compile(r"(?<![,\w])\s(\$\w+)\s*:=\s*\$?\.Values((?:\.[A-Za-z_]\w*)+)")
_VAR_REF = re.compile(r"(\$[A-Za-z_]\w*)((?:\.[A-Za-z_]\w*)+)")
_YAML_KEY = re.compile(r"^\s*(?:-\s+)?([A-Za-z][\w./-]*):(?:\s|$)", re.M)
# A name may end in an action (NOETL_WORKER_TOKEN_{{ upper $pool }}): it then stands for a prefix.
_ENV_NAME = re.compile(r"^\s*-\s+name:\s+([A-Z][A-Z0-9_]+)(\{\{[^}]*\}\})?\s*$", re.M)
_KIND = re.compile(r"^kind:\s+(\w+)\s*$", re.M)

#: Keys that only exist in chart text (Chart.yaml-style helpers), never in rendered objects.
HELM_ONLY_KEYS = frozenset({"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/instance"})


@dataclass(frozen=True)
class Chart:
    templates: dict[str, str]
    helpers: str
    values: dict[str, Any]


def load_chart(chart_dir: Path) -> Chart:
    templates = {p.name: p.read_text() for p in sorted((chart_dir / "templates").glob("*.yaml"))}
    helpers = (chart_dir / "templates" / "_helpers.tpl").read_text()
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    return Chart(templates=templates, helpers=helpers, values=values)


def _lookup(values: Any, path: list[str]) -> bool:
    for part in path:
        if not isinstance(values, dict) or part not in values:
            return False
        values = values[part]
    return True


def check_actions(name: str, text: str) -> list[str]:
    """Balanced ``{{ }}``, matched block keywords and known function names."""
    problems: list[str] = []
    if text.count("{{") != text.count("}}"):
        problems.append(f"{name}: unbalanced '{{{{' / '}}}}'")
    stack: list[str] = []
    for match in _ACTION.finditer(text):
        body = match.group(1)
        if body.startswith("/*"):
            continue
        words = re.findall(r"(?<![\w.$])([A-Za-z_]\w*)", re.sub(r'"[^"]*"', '""', body))
        if not words:
            continue
        head = words[0]
        if head in ("if", "range", "with", "define", "block"):
            stack.append(head)
        elif head == "end":
            if not stack:
                problems.append(f"{name}: 'end' without an open block")
            else:
                stack.pop()
        elif head == "else" and not stack:
            problems.append(f"{name}: 'else' outside a block")
        for word in words:
            if word not in KNOWN_FUNCTIONS and word not in ("nil", "true", "false"):
                problems.append(f"{name}: unknown function or keyword {word!r}")
    if stack:
        problems.append(f"{name}: unclosed block(s) {stack}")
    return problems


def check_values_refs(name: str, text: str, values: dict[str, Any]) -> list[str]:
    """Every ``.Values.a.b`` (and ``$pool.x`` inside ``range ... := .Values.m``) exists."""
    problems: list[str] = []
    for match in _VALUES_REF.finditer(text):
        path = match.group(1).strip(".").split(".")
        if not _lookup(values, path):
            problems.append(f"{name}: .Values.{'.'.join(path)} is not in values.yaml")
    for match in _ASSIGN.finditer(text):
        var, base = match.group(1), match.group(2).strip(".").split(".")
        if not _lookup(values, base):
            continue  # already reported as a missing .Values path
        target: Any = values
        for part in base:
            target = target[part]
        pattern = re.compile(re.escape(var) + r"((?:\.[A-Za-z_]\w*)+)")
        for ref in pattern.finditer(text):
            rest = ref.group(1).strip(".").split(".")
            if not _lookup(target, rest):
                problems.append(f"{name}: {var}.{'.'.join(rest)} ({'.'.join(base)}) is not in values.yaml")
    bindings = {m.group(1): m.group(2).strip(".").split(".") for m in _RANGE_BIND.finditer(text)}
    for match in _VAR_REF.finditer(text):
        var, rest = match.group(1), match.group(2).strip(".").split(".")
        if var not in bindings:
            continue
        parent = values
        for part in bindings[var]:
            parent = parent.get(part, {}) if isinstance(parent, dict) else {}
        if not parent:
            problems.append(f"{name}: {var} ranges over an empty or missing map")
        for key, child in (parent or {}).items():
            if not _lookup(child, rest):
                problems.append(f"{name}: {var}.{'.'.join(rest)} missing for {key!r} in values.yaml")
    return problems


def _keys(obj: Any, out: set[str]) -> set[str]:
    if isinstance(obj, dict):
        for key, value in obj.items():
            out.add(str(key))
            _keys(value, out)
    elif isinstance(obj, list):
        for item in obj:
            _keys(item, out)
    return out


def _template_keys(text: str) -> set[str]:
    without_actions = _ACTION.sub("", text)
    return set(_YAML_KEY.findall(without_actions))


def template_variants() -> list[Profile]:
    """Renderer outputs a template must cover: the base profile, its fixed-replica variant, OIDC."""
    base = base_profile()
    oidc = OidcSpec(issuer="https://issuer.example", audience="noetl", jwks_url="https://issuer.example/jwks")
    return [
        base,
        replace(base, control_api=replace(base.control_api, autoscale=None)),
        replace(base, control_api=replace(base.control_api, oidc=oidc)),
    ]


def check_template_shapes(chart: Chart, profiles: list[Profile] | None = None) -> list[str]:
    """Each template emits the kinds, YAML keys and env names of its rendered counterpart."""
    rendered = [build_manifests(p) for p in (profiles or template_variants())]
    helper_keys = _template_keys(chart.helpers)
    problems: list[str] = []
    for template, files in TEMPLATE_FILES.items():
        text = chart.templates.get(template)
        if text is None:
            problems.append(f"{template}: missing from the chart")
            continue
        docs = [doc for tree in rendered for f in files for doc in tree[f]]
        want_kinds = {d["kind"] for d in docs}
        got_kinds = set(_KIND.findall(text))
        if want_kinds != got_kinds:
            problems.append(f"{template}: kinds {sorted(got_kinds)} != rendered {sorted(want_kinds)}")
        want_keys = _keys(docs, set())
        # Secret values are data, not schema: the template ranges over them.
        for doc in docs:
            want_keys -= set(doc.get("stringData", {}))
        got_keys = _template_keys(text) | helper_keys
        missing = sorted(want_keys - got_keys)
        extra = sorted(_template_keys(text) - want_keys - HELM_ONLY_KEYS)
        if missing:
            problems.append(f"{template}: keys the renderer emits but the template lacks: {missing}")
        if extra:
            problems.append(f"{template}: keys the renderer never emits: {extra}")
        want_env: set[str] = set()
        for doc in docs:
            for container in _containers(doc):
                want_env |= set(env_names(container.get("env", [])))
        found = _ENV_NAME.findall(text)
        got_env = {name for name, action in found if not action}
        prefixes = {name for name, action in found if action}
        covered = {n for n in want_env if any(n.startswith(p) for p in prefixes)}
        unused = {f"{p}*" for p in prefixes if not any(n.startswith(p) for n in want_env)}
        if want_env - covered != got_env or unused:
            problems.append(
                f"{template}: env names differ: only in template {sorted((got_env - want_env) | unused)}, "
                f"only in renderer {sorted(want_env - covered - got_env)}"
            )
    return problems


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]
