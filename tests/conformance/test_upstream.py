"""The 18 upstream NoETL v2 playbooks of the shared set, run unchanged, checked against INDEX.md.

Where DSL.md and upstream disagree DSL.md has picked: the fan-in barrier (a step reached by
several live branches runs once, C11), implicit routing to ``end`` (C13), inclusive default
for an unguarded earlier-form list (C12) and lenient undefined for run-produced data (C9).
Every execution starts at once (one module fixture) and each test waits for its own; each
finishes with replay == stored state (``conftest.finish``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conformance_support import UPSTREAM, Finished, finish
from noetl_cli import Api, CliError

Conn = psycopg.Connection[dict[str, Any]]

#: (case key, file, payload maker given the echo URL); the child scorer is registered first
CASES: list[tuple[str, str, Callable[[str], dict[str, Any] | None]]] = [
    ("c2_user_profile_scorer", "c2_user_profile_scorer.yaml", lambda url: None),
    ("c2_hello_world", "c2_hello_world.yaml", lambda url: None),
    ("c2_control_flow_workbook", "c2_control_flow_workbook.yaml", lambda url: None),
    ("c2_control_flow_workbook[cold]", "c2_control_flow_workbook.yaml", lambda url: {"temperature_c": 20}),
    ("c2_test_args_passing", "c2_test_args_passing.yaml", lambda url: None),
    ("c2_test_loop_instance_isolation", "c2_test_loop_instance_isolation.yaml", lambda url: None),
    ("c2_playbook_composition", "c2_playbook_composition.yaml", lambda url: None),
    ("c2_http_retry_with_stop", "c2_http_retry_with_stop.yaml", lambda url: {"test_url": f"{url}/get"}),
    ("v10_hello_world", "v10_hello_world.yaml", lambda url: None),
    ("v10_control_flow_workbook", "v10_control_flow_workbook.yaml", lambda url: None),
    ("v10_control_flow_workbook[cold]", "v10_control_flow_workbook.yaml", lambda url: {"temperature_c": 20}),
    ("v10_fanout_reduce_phase6", "v10_fanout_reduce_phase6.yaml", lambda url: None),
    ("v10_test_args_passing", "v10_test_args_passing.yaml", lambda url: None),
    ("v10_test_transient", "v10_test_transient.yaml", lambda url: None),
    ("v10_test_loop_instance_isolation", "v10_test_loop_instance_isolation.yaml", lambda url: None),
    ("v10_heavy_loop_aggregation", "v10_heavy_loop_aggregation.yaml", lambda url: None),
    ("v10_comprehensive_test", "v10_comprehensive_test.yaml", lambda url: None),
    ("v10_http_test", "v10_http_test.yaml", lambda url: {"api_url": url}),
    ("v10_test_implicit_end_routing", "v10_test_implicit_end_routing.yaml", lambda url: None),
]


@pytest.fixture(scope="module")
def runs(api: Api, echo: tuple[str, Any], pg_local: None) -> dict[str, int]:
    """Register every case (scorer first), then start every execution at once: key → execution id."""
    url, _ = echo
    started: dict[str, int] = {}
    for key, file, payload in CASES:
        entry = api.register_file(UPSTREAM / file)
        reply = api.execute(entry["path"], payload=payload(url), version=entry["version"])
        started[key] = int(reply["execution_id"])
    return started


@pytest.fixture
def run(runs: dict[str, int], api: Api, db: Conn, request: pytest.FixtureRequest) -> Finished:
    """The finished execution of the case named by the test's ``case`` parameter."""
    key: str = request.param
    return finish(api, db, runs[key], timeout=180)


def case(key: str) -> Any:
    return pytest.mark.parametrize("run", [key], indirect=True, ids=[key])


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)


@case("c2_hello_world")
def test_c2_hello_world(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["test_step"] == {"status": "success", "data": {"message": "Hello World"}}
    assert run.results["end"] == {"status": "complete"}
    assert run.issued() == ["start", "test_step", "end"]


@case("c2_control_flow_workbook")
def test_c2_control_flow_workbook_hot(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["eval_flag"] == {"is_hot": True, "message": "hot"}
    assert run.results["hot_task_a"] == {"who": "A"}
    assert run.results["hot_task_b"] == {"who": "B"}  # C12: an unguarded earlier-form list is inclusive
    assert not {"cold_path", "cold_task"} & set(run.results)
    assert run.ran("end") == 1  # C11: the barrier runs the join once


@case("c2_control_flow_workbook[cold]")
def test_c2_control_flow_workbook_cold(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["eval_flag"]["is_hot"] is False
    assert run.results["cold_task"] == {"who": "C"}
    assert not [s for s in run.results if s.startswith("hot_")]


@case("c2_test_args_passing")
def test_c2_test_args_passing(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["use_vars"] == {"status": "success", "result": 300}


LOOP_USERS = [
    {"type": "user", "id": 1, "name": "Alice", "message": "Processed user Alice"},
    {"type": "user", "id": 2, "name": "Bob", "message": "Processed user Bob"},
]
LOOP_PRODUCTS = [
    {"type": "product", "id": 101, "name": "Laptop", "message": "Processed product Laptop"},
    {"type": "product", "id": 102, "name": "Mouse", "message": "Processed product Mouse"},
]


def _loop_isolation(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    verify = run.results["verify_results"]
    assert verify["users_count"] == 2 and verify["products_count"] == 2
    assert verify["verification"] == "Both loops completed independently"
    assert verify["users_results"]["results"] == LOOP_USERS
    assert verify["products_results"]["results"] == LOOP_PRODUCTS


@case("c2_test_loop_instance_isolation")
def test_c2_test_loop_instance_isolation(run: Finished) -> None:
    _loop_isolation(run)


@case("v10_test_loop_instance_isolation")
def test_v10_test_loop_instance_isolation(run: Finished) -> None:
    _loop_isolation(run)


@case("c2_user_profile_scorer")
def test_c2_user_profile_scorer(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    final = run.results["finalize_result"]
    assert final["user_name"] == "TestUser" and _close(final["profile_score"], 15.8)
    assert final["score_category"] == "Junior"
    expected = {"experience": 6.0, "performance": 6.58, "department": 2.25, "age": 1.0}
    assert set(final["score_breakdown"]) == set(expected)
    assert all(_close(final["score_breakdown"][k], v) for k, v in expected.items())
    assert final["execution_id"] == "standalone_execution" and final["processing_status"] == "completed"
    for step, pair in {
        "score_experience": (15.0, 0.4),
        "score_performance": (18.8, 0.35),
        "score_department": (15.0, 0.15),
        "score_age": (10.0, 0.1),
    }.items():
        assert [round(v, 9) for v in run.results[step].values()] == list(pair), step


@case("c2_playbook_composition")
def test_c2_playbook_composition(run: Finished, api: Api, db: Conn) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    children = db.execute(
        "SELECT execution_id, status FROM noetl.execution WHERE parent_execution_id = %s ORDER BY execution_id",
        (run.execution_id,),
    ).fetchall()
    assert [c["status"] for c in children] == ["COMPLETED"] * 4
    scores = []
    for child in children:
        finished = finish(api, db, child["execution_id"])
        final = finished.results["finalize_result"]
        assert str(final["execution_id"]) == str(run.execution_id)  # native rendering keeps the int
        assert final["score_category"] == "Junior"
        scores.append((final["user_name"], final["profile_score"]))
    assert scores == [("Alice", 16.2), ("Bob", 16.7), ("Charlie", 15.6), ("Diana", 21.2)]
    rows = db.execute(
        "SELECT id, user_name, profile_score, score_category FROM public.user_profile_results"
        " WHERE execution_id = %s ORDER BY user_name",
        (str(run.execution_id),),
    ).fetchall()
    assert [(r["id"], r["profile_score"], r["score_category"]) for r in rows] == [
        (f"{run.execution_id}:{name}", score, "Junior") for name, score in scores
    ]
    end = run.results["end"]
    assert end["pipeline_status"] == "completed" and end["users_processed"] == 4


@case("c2_http_retry_with_stop")
def test_c2_http_retry_with_stop(run: Finished) -> None:
    # the retry and give-up variants (request counts) run in tests/e2e/test_tool_conformance.py
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["start"]["status_code"] == 200
    assert run.results["end"] == {"status": "complete"}


def test_c2_heavy_loop_aggregation_is_rejected_naming_vars(api: Api) -> None:
    before = {(e["path"], e["version"]) for e in api.catalog()}
    with pytest.raises(CliError) as rejected:
        api.register_file(UPSTREAM / "c2_heavy_loop_aggregation.yaml")
    assert rejected.value.status_code == 422
    assert "'vars'" in str(rejected.value)
    assert {(e["path"], e["version"]) for e in api.catalog()} == before


@case("v10_hello_world")
def test_v10_hello_world(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["test_step"] == {"status": "ok", "data": {"message": "Hello World"}}
    assert run.results["end"] == {"status": "complete"}


@case("v10_control_flow_workbook")
def test_v10_control_flow_workbook_hot(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["eval_flag"] == {"is_hot": True, "message": "hot"}
    assert run.results["hot_task_a"] == {"who": "A"} and run.results["hot_task_b"] == {"who": "B"}
    assert not [s for s in run.results if s.startswith("cold_")]
    assert run.ran("end") == 1  # C11 barrier


@case("v10_control_flow_workbook[cold]")
def test_v10_control_flow_workbook_cold(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["eval_flag"]["is_hot"] is False
    assert run.results["cold_task"] == {"who": "C"}
    assert not [s for s in run.results if s.startswith("hot_")]


@case("v10_fanout_reduce_phase6")
def test_v10_fanout_reduce_phase6(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["normalize_customer"] == {"normalized": True}
    assert run.results["enrich_customer"] == {"enriched": True}
    assert run.results["reduce_customer"] == {"reduced": True}
    assert run.ran("reduce_customer") == 1  # the fixture's own acceptance (C11 barrier)
    # by created_at: ids minted by different processes do not order events within one millisecond
    ids = {
        (e["event_type"], e["step"]): e["created_at"]
        for e in run.events
        if e["event_type"] in ("command.completed", "step.enter")
    }
    reduce_entered = ids[("step.enter", "reduce_customer")]
    assert ids[("command.completed", "normalize_customer")] < reduce_entered
    assert ids[("command.completed", "enrich_customer")] < reduce_entered


@case("v10_test_args_passing")
def test_v10_test_args_passing(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    ctx = run.view["ctx"]
    assert ctx["test_var"] == 100 and type(ctx["test_var"]) is int
    assert ctx["computed"] == 200
    assert run.results["use_vars"] == {"status": "success", "result": 300}


@case("v10_test_transient")
def test_v10_test_transient(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    config = {"timeout": 30, "retries": 3}
    patches = [e["context"]["set"] for e in run.events if e["event_type"] == "ctx.patched"]
    assert patches[0] == {"ctx.counter": 0, "ctx.status_var": "initialized", "ctx.config": config}
    assert all(run.results["test_get_var"]["data"]["verification"].values())
    assert {k: run.view["ctx"][k] for k in ("counter", "status_var", "config")} == {
        "counter": 1,
        "status_var": "processing",
        "config": config,
    }
    assert run.results["verify_updates"]["all_checks_passed"] is True


@case("v10_heavy_loop_aggregation")
def test_v10_heavy_loop_aggregation(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    loop_results = run.view["ctx"]["loop_results"]
    assert [r["item_id"] for r in loop_results] == list(range(100))
    aggregated = run.results["aggregate_results"]
    assert aggregated["summary"] == {
        "total_processed": 100,
        "successful": 100,
        "failed": 0,
        "success_rate": 100.0,
    }
    metrics = aggregated["metrics"]
    assert metrics["by_category"] == {f"category_{i}": 10 for i in range(10)}
    assert sorted(metrics["by_priority"].values()) == [20] * 5
    assert metrics["even_items"] == 50 and metrics["odd_items"] == 50
    assert metrics["total_computed_value"] == 990000 and metrics["average_computed_value"] == 9900.0
    assert run.results["validate_results"]["status"] == "validated"
    assert run.results["validate_results"]["all_checks_passed"] is True
    assert run.results["end"] == {
        "status": "completed",
        "test_name": "heavy_loop_aggregation",
        "test_result": "validated",
        "all_passed": True,
    }


@case("v10_comprehensive_test")
def test_v10_comprehensive_test(run: Finished) -> None:
    # C9 lenient undefined for run-produced data: both branches complete
    assert run.status == "COMPLETED", run.view.get("error")
    value = run.results["start"]["random_value"]
    assert 1 <= value <= 20
    high = value > 10
    taken, skipped = ("process_high", "process_low") if high else ("process_low", "process_high")
    assert taken in run.results and skipped not in run.results
    processed = 2 * value if high else value + 100
    assert run.results[taken]["processed"] == processed
    summary = run.results["summarize"]
    assert {k: summary[k] for k in ("original_value", "processing_path", "final_result", "completed")} == {
        "original_value": value,
        "processing_path": "high" if high else "low",
        "final_result": processed,
        "completed": True,
    }


@case("v10_http_test")
def test_v10_http_test(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert set(run.results["start"]) == {"status_code", "headers", "body"}
    assert run.results["process"]["status"] == "ok" and run.results["process"]["status_code"] == 200
    assert run.results["verify"] == {"verified": True, "status_code": 200, "status": "passed"}
    assert run.results["end"] == {"status": "completed", "test_passed": True}


@case("v10_test_implicit_end_routing")
def test_v10_test_implicit_end_routing(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["start"] == {"status": "started"}
    assert run.results["step1"] == {"status": "step1_complete"}
    assert run.results["end"] == {"status": "workflow_complete"}  # C13: implicit routing to end
    assert run.ran("end") == 1


def test_every_upstream_playbook_is_covered() -> None:
    files = {p.name for p in Path(UPSTREAM).glob("*.yaml")}
    covered = {file for _, file, _ in CASES} | {"c2_heavy_loop_aggregation.yaml"}
    assert files == covered
