"""The chart executed (with the small Go-template interpreter, ``_gotemplate``) and its objects
diffed against the renderer's, and :func:`check_chart`, which runs every check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .._build import build_manifests
from .._gotemplate import Chart as GoChart
from .._profiles import base_profile
from .._spec import Profile
from ._checks import (
    HELM_ONLY_KEYS,
    Chart,
    check_actions,
    check_template_shapes,
    check_values_refs,
    load_chart,
)
from ._values import allow_placeholders, profile_from_values, values_from_profile


def check_chart(chart_dir: Path) -> list[str]:
    chart = load_chart(chart_dir)
    problems: list[str] = []
    for name, text in [*chart.templates.items(), ("_helpers.tpl", chart.helpers)]:
        problems += check_actions(name, text)
        problems += check_values_refs(name, text, chart.values)
    problems += check_template_shapes(chart)
    if problems:
        return problems
    # Execute the chart: defaults, and every pool enabled, against the renderer.
    defaults = allow_placeholders(chart.values)
    problems += [
        f"chart (default values): {p}"
        for p in compare_chart(render_chart(chart_dir, defaults), profile_from_values(defaults))
    ]
    everything = allow_placeholders(values_from_profile(base_profile()))
    problems += [
        f"chart (all pools): {p}" for p in compare_chart(render_chart(chart_dir, everything), base_profile())
    ]
    return problems


#: Differences the chart may have from the renderer: Helm's bookkeeping labels, the Secret's
#: explanatory note, and the Namespace (Helm installs into ``--namespace``, it does not own it).
_CHART_ONLY_ANNOTATIONS = frozenset({"noetl.io/note"})


def render_chart(
    chart: Path | Chart, values: dict[str, Any], *, namespace: str = "noetl"
) -> list[dict[str, Any]]:
    """Execute the chart's templates with ``values`` (see ``_gotemplate``) and parse the output."""
    if isinstance(chart, Path):
        chart = load_chart(chart)
    program = GoChart.load({**chart.templates, "_helpers.tpl": chart.helpers})
    docs: list[dict[str, Any]] = []
    for text in program.render(values, namespace=namespace).values():
        docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def _normalise(doc: dict[str, Any]) -> dict[str, Any]:
    doc = yaml.safe_load(yaml.safe_dump(doc))
    meta = doc.get("metadata", {})
    for key in HELM_ONLY_KEYS:
        meta.get("labels", {}).pop(key, None)
    for key in _CHART_ONLY_ANNOTATIONS:
        meta.get("annotations", {}).pop(key, None)
    return dict(doc)


def _first_difference(a: Any, b: Any, path: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}.{key}: only in {'chart' if key in a else 'renderer'}"
            found = _first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items in the chart, {len(b)} in the renderer"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: chart {a!r} != renderer {b!r}"


def compare_chart(chart_docs: list[dict[str, Any]], profile: Profile) -> list[str]:
    """Where the chart's objects differ from what the renderer builds for ``profile``."""
    want = {
        (d["kind"], d["metadata"]["name"]): _normalise(d)
        for docs in build_manifests(profile).values()
        for d in docs
        if d["kind"] != "Namespace"
    }
    got = {(d["kind"], d["metadata"]["name"]): _normalise(d) for d in chart_docs}
    problems = [f"{k}/{n}: rendered by the chart only" for k, n in sorted(got.keys() - want.keys())]
    problems += [f"{k}/{n}: missing from the chart" for k, n in sorted(want.keys() - got.keys())]
    for key in sorted(got.keys() & want.keys()):
        diff = _first_difference(got[key], want[key])
        if diff:
            problems.append(f"{key[0]}/{key[1]}{diff}")
    return problems
