"""The Grafana dashboard reads the metrics the services export (or lists them as provisional)."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from noetl_k8s._dashboard import DASHBOARD_PATH, METRICS, build_dashboard

ROOT = Path(__file__).resolve().parents[3]
_METRIC = re.compile(r"\bnoetl_[a-z_]+")
_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def _exprs() -> list[str]:
    return [t["expr"] for p in build_dashboard()["panels"] for t in p["targets"]]


def _declared_in_sources() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name → (kind, labels) of every ``counter/gauge/histogram(SERVICE, ...)`` a service declares."""
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for path in ROOT.glob("services/*/src/*/_metrics.py"):
        tree = ast.parse(path.read_text())
        service = next(
            (
                node.value.value
                for node in tree.body
                if isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "SERVICE" for t in node.targets)
                and isinstance(node.value, ast.Constant)
            ),
            None,
        )
        if not isinstance(service, str):
            continue
        for call in ast.walk(tree):
            if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
                continue
            if call.func.id not in ("counter", "gauge", "histogram") or len(call.args) < 2:
                continue
            name = call.args[1]
            assert isinstance(name, ast.Constant) and isinstance(name.value, str)
            labels_node = call.args[3] if len(call.args) > 3 else None
            for kw in call.keywords:
                if kw.arg == "labels":
                    labels_node = kw.value
            labels = tuple(ast.literal_eval(labels_node)) if labels_node is not None else ()
            full = f"noetl_{service.replace('-', '_')}_{name.value}"
            found[full] = (call.func.id, labels)
    return found


def test_dashboard_file_is_valid_json_with_unique_panel_ids() -> None:
    board = json.loads((ROOT / DASHBOARD_PATH).read_text())
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)) >= 8
    assert board["uid"] == "noetl-control-plane"


def test_panels_cover_the_required_views() -> None:
    titles = " | ".join(p["title"] for p in build_dashboard()["panels"]).lower()
    for topic in ("outbox pending", "publish latency", "claim outcomes", "dispatch duration", "plug-in load"):
        assert topic in titles


def test_every_queried_metric_is_in_the_metric_table_and_every_entry_is_queried() -> None:
    used = {_SUFFIX.sub("", m) for expr in _exprs() for m in _METRIC.findall(expr)}
    table = {m.name for m in METRICS}
    assert used == table


def test_non_provisional_metrics_are_declared_by_a_service_with_the_same_type_and_labels() -> None:
    declared = _declared_in_sources()
    assert declared, "no services/*/src/*/_metrics.py found"
    for metric in METRICS:
        if metric.provisional:
            assert metric.name not in declared, f"{metric.name} is exported now: mark it provisional=False"
            continue
        assert metric.name in declared, metric.name
        assert declared[metric.name] == (metric.kind, metric.labels), metric.name


def test_grouping_labels_exist_on_the_metrics_queried() -> None:
    table = {m.name: set(m.labels) | {"le"} for m in METRICS}
    for expr in _exprs():
        for by, metric in re.findall(r"by \(([^)]*)\) \(\w*\(?(noetl_[a-z_]+)", expr):
            labels = {label.strip() for label in by.split(",")}
            assert labels <= table[_SUFFIX.sub("", metric)], (expr, labels)


def test_provisional_metrics_are_listed_in_the_deploy_doc() -> None:
    doc = (ROOT / "docs/deploy-kubernetes.md").read_text()
    for metric in METRICS:
        if metric.provisional:
            assert f"`{metric.name}`" in doc, metric.name
