"""The Grafana dashboard reads the metrics the services export (or lists them as provisional)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from noetl_k8s._dashboard import DASHBOARD_PATH, METRICS, build_dashboard

ROOT = Path(__file__).resolve().parents[3]
_METRIC = re.compile(r"\bnoetl_[a-z_]+")
_SUFFIX = re.compile(r"_(bucket|sum|count)$")


def _exprs() -> list[str]:
    return [t["expr"] for p in build_dashboard()["panels"] for t in p["targets"]]


def _declared_in_sources() -> set[str]:
    """``noetl_<service>_<name>`` for every counter/gauge/histogram the services declare."""
    found: set[str] = set()
    for path in ROOT.glob("services/*/src/*/_metrics.py"):
        text = path.read_text()
        service = re.search(r'SERVICE = "([\w-]+)"', text)
        if service is None:
            continue
        prefix = f"noetl_{service.group(1).replace('-', '_')}_"
        found |= {
            prefix + name for name in re.findall(r'(?:counter|gauge|histogram)\(\s*SERVICE,\s*"(\w+)"', text)
        }
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


def test_non_provisional_metrics_are_declared_by_a_service() -> None:
    declared = _declared_in_sources()
    assert declared, "no services/*/src/*/_metrics.py found"
    missing = [m.name for m in METRICS if not m.provisional and m.name not in declared]
    assert missing == []


def test_provisional_metrics_are_listed_in_the_deploy_doc() -> None:
    doc = (ROOT / "docs/deploy-kubernetes.md").read_text()
    for metric in METRICS:
        if metric.provisional:
            assert f"`{metric.name}`" in doc, metric.name
