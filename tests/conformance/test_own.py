"""The suite's own playbooks (``tests/conformance/playbooks``): the DSL features the shared set
does not pin down, and how a playbook ends when something goes wrong (the message names the step).

Every execution of the module starts at once; each test waits for its own, and replay ==
stored state is asserted for each (``conformance_support.finish``).
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import psycopg
import pytest
from conformance_support import Finished, finish
from noetl_cli import Api, CliError
from noetl_dev import Stack
from noetl_dev.testing import recorded_events, wait_until

Conn = psycopg.Connection[dict[str, Any]]

#: case → (catalog path, payload; "{url}" is replaced by the local HTTP server's URL)
CASES: dict[str, tuple[str, dict[str, Any] | None]] = {
    "step_when_args": ("conformance/own/step_when_args", None),
    "step_when_args[off]": ("conformance/own/step_when_args", {"flag": False}),
    "pipeline_rules": ("conformance/own/pipeline_rules", None),
    "rule_fail": ("conformance/own/rule_fail", None),
    "routing": ("conformance/own/routing", None),
    "loops": ("conformance/own/loops", None),
    "ctx_patches": ("conformance/own/ctx_patches", None),
    "workbook_calls": ("conformance/own/workbook_calls", None),
    "parent": ("conformance/own/parent", None),
    "parent_fail": ("conformance/own/parent_fail", None),
    "step_timeout": ("conformance/own/step_timeout", {"url": "{url}"}),
    "task_timeout": ("conformance/own/task_timeout", {"url": "{url}"}),
    "template_error": ("conformance/own/template_error", None),
    "tool_exception": ("conformance/own/tool_exception", None),
    "missing_credential": ("conformance/own/missing_credential", None),
}


@pytest.fixture(scope="module")
def runs(api: Api, echo: tuple[str, Any]) -> dict[str, int]:
    url, _ = echo
    started: dict[str, int] = {}
    for key, (path, payload) in CASES.items():
        if payload is not None:
            payload = {k: v.replace("{url}", url) if isinstance(v, str) else v for k, v in payload.items()}
        started[key] = int(api.execute(path, payload=payload)["execution_id"])
    return started


@pytest.fixture
def run(runs: dict[str, int], api: Api, db: Conn, request: pytest.FixtureRequest) -> Finished:
    return finish(api, db, runs[request.param], timeout=120)


def case(key: str) -> Any:
    return pytest.mark.parametrize("run", [key], indirect=True, ids=[key])


def _failed_at(run: Finished, step: str) -> str:
    """Assert the playbook failed at ``step``; return the message. ``end`` ran only when the
    step's arcs routed the failed call on (current form: an arc without ``when`` fires after a
    failure too, as upstream's does), and the execution still ended FAILED."""
    assert run.status == "FAILED", run.view
    message = str(run.view["error"])
    assert f"'{step}'" in message or f" {step}" in message, message
    failed = next(e for e in run.events if e["event_type"] == "playbook.failed")
    assert failed["step"] == step
    routed = [
        e
        for e in run.events
        if e["event_type"] == "next.evaluated" and e["step"] == step and (e["context"] or {}).get("after")
    ]
    assert ("end" in run.issued()) == bool(routed)
    if routed:
        assert routed[0]["context"] == {"mode": "exclusive", "fired": ["end"], "implicit": False, "after": "call.error"}
        assert run.results[step]["status"] == "error" and run.results[step]["error"]["message"]
    return message


@case("step_when_args")
def test_step_when_true_runs_with_arc_args(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["guarded"] == {"product": 20}  # arc args k=10 times start.n=2
    assert run.results["always"] == {"sum": 3}  # def main(k, n) with the other arc's args


@case("step_when_args[off]")
def test_step_when_false_skips_the_step(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert "guarded" not in run.results and run.results["always"] == {"sum": 3}
    skipped = [e for e in run.events if e["event_type"] == "step.enter" and e["step"] == "guarded"]
    assert [e["status"] for e in skipped] == ["SKIPPED"]
    assert "guarded" not in run.issued()


@case("pipeline_rules")
def test_retry_jump_break_continue(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["start"] == {"retried_until": 3, "counted": 3}
    assert run.results["breaking"] == {"stop": True}  # break: the step's result is the breaking task's
    assert run.results["end"] == {"counted": 3, "stopped": True}
    assert run.issued() == ["start", "breaking", "end"]  # all of it inside one command per step


@case("rule_fail")
def test_fail_rule_fails_the_playbook(run: Finished) -> None:
    _failed_at(run, "check")


@case("routing")
def test_inclusive_barrier_exclusive(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert "c" not in run.results
    assert run.results["b"] == {"from": "b", "prev": "b1"}
    assert run.ran("join") == 1
    assert sorted(run.results["join"]["seen"]) == ["a", "b"]
    assert run.results["x"] == {"route": "x"} and "y" not in run.results
    assert run.ran("end") == 1


@case("loops")
def test_sequential_and_parallel_loops(run: Finished, db: Conn) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    sequential = run.results["sequential"]["results"]
    assert sequential == [
        {"i": 0, "word": "gamma", "same": True},
        {"i": 1, "word": "alpha", "same": True},
        {"i": 2, "word": "beta", "same": True},
    ]
    assert run.results["parallel"]["results"] == [{"n": n, "square": n * n} for n in range(12)]
    assert run.results["end"] == {"words": ["gamma", "alpha", "beta"], "squares": [n * n for n in range(12)]}
    # never more than max_in_flight (3) iterations of `parallel` outstanding at once
    # (by created_at: issued is stamped by the server after it got the completion that freed a slot;
    # event ids of different processes do not order events within one millisecond)
    timeline = db.execute(
        "SELECT event_type FROM noetl.event WHERE execution_id = %s AND step = 'parallel'"
        " AND event_type IN ('command.issued', 'command.completed', 'command.failed') ORDER BY created_at",
        (run.execution_id,),
    ).fetchall()
    outstanding, peak = 0, 0
    for event in timeline:
        if event["event_type"] == "command.issued":
            outstanding += 1
        elif event["event_type"] in ("command.completed", "command.failed"):
            outstanding -= 1
        peak = max(peak, outstanding)
    assert 1 <= peak <= 3
    assert run.issued().count("parallel") == 12 and run.issued().count("sequential") == 3


@case("ctx_patches")
def test_ctx_patches_from_step_arc_and_rule(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    ctx = run.view["ctx"]
    assert ctx["base"] == 7 and ctx["from_arc"] == 14 and ctx["total"] == 21
    assert ctx["config"] == {"mode": "fast", "level": 2}  # a nested key patched, its sibling kept
    assert run.results["end"] == {"total": 21, "config": {"mode": "fast", "level": 2}, "missing": None}
    sources = [e["context"]["source"] for e in run.events if e["event_type"] == "ctx.patched"]
    assert sources == ["step.set", "arc:start->bump", "rules"]


@case("workbook_calls")
def test_workbook_defaults_and_overrides(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["start"] == {"scaled": 15}
    assert run.results["again"] == {"scaled": 150}


@case("parent")
def test_playbook_tool_runs_linked_children(run: Finished, api: Api, db: Conn) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["start"] == {"returned": {"doubled": 42}, "final": {"child": "done"}}
    children = db.execute(
        "SELECT execution_id, status, payload FROM noetl.execution"
        " WHERE parent_execution_id = %s ORDER BY execution_id",
        (run.execution_id,),
    ).fetchall()
    assert [(c["status"], c["payload"]["x"]) for c in children] == [("COMPLETED", 21), ("COMPLETED", 42)]
    for child in children:
        finished = finish(api, db, child["execution_id"])
        started = next(e for e in finished.events if e["event_type"] == "playbook.execution_requested")
        assert started["context"]["payload"]["x"] in (21, 42)
        assert finished.view["parent_execution_id"] == run.execution_id


@case("parent_fail")
def test_failing_child_fails_the_parent_step(run: Finished, db: Conn) -> None:
    message = _failed_at(run, "start")
    child = db.execute(
        "SELECT execution_id, status FROM noetl.execution WHERE parent_execution_id = %s", (run.execution_id,)
    ).fetchone()
    assert child is not None and child["status"] == "FAILED"
    assert str(child["execution_id"]) in message and "child refused 1" in message


@case("step_timeout")
def test_step_timeout_fails_the_step(run: Finished) -> None:
    message = _failed_at(run, "slow")
    assert "timed out after 0.5 s" in message
    assert run.results["start"] == {"ok": True}


@case("task_timeout")
def test_task_timeout_is_an_outcome_rules_handle(run: Finished) -> None:
    assert run.status == "COMPLETED", run.view.get("error")
    assert run.results["start"] == {"fell_back": True}
    assert run.results["end"] == {"fell_back": True}


@case("template_error")
def test_template_error_names_step_and_expression(run: Finished) -> None:
    message = _failed_at(run, "render")
    assert "absent_key" in message


@case("tool_exception")
def test_tool_exception_names_step_and_error(run: Finished) -> None:
    message = _failed_at(run, "boom")
    assert "KeyError" in message and "no such thing" in message


@case("missing_credential")
def test_missing_credential_names_it(run: Finished) -> None:
    message = _failed_at(run, "query")
    assert "no_such_credential_xyz" in message


def test_invalid_next_target_is_rejected_naming_step_and_field(api: Api) -> None:
    content = (
        "apiVersion: noetl.io/v2\nkind: Playbook\n"
        "metadata: {name: bad_next, path: conformance/own/bad_next}\n"
        "workflow:\n"
        "  - step: start\n"
        '    tool: {kind: python, code: "result = 1"}\n'
        "    next: {spec: {mode: exclusive}, arcs: [{step: nowhere}]}\n"
    )
    with pytest.raises(CliError) as rejected:
        api.register(content)
    assert rejected.value.status_code == 422
    text = str(rejected.value)
    assert "nowhere" in text and "start" in text and "next" in text
    assert not [e for e in api.catalog() if e["path"] == "conformance/own/bad_next"]


def _stale_drops(stack: Stack) -> float:
    """The shared worker's count of commands it abandoned on a 409 (``outcome="stale_attempt"``)."""
    text = httpx.get(f"{stack.services['worker-shared'].url}/metrics", timeout=10).text
    found = re.findall(
        r'^noetl_system_worker_commands_total\{[^}]*outcome="stale_attempt"[^}]*\} (\S+)$', text, re.M
    )
    return sum(float(v) for v in found)


def test_cancellation_stops_the_running_step(api: Api, db: Conn, stack: Stack, echo: tuple[str, Any]) -> None:
    url, _ = echo
    before = _stale_drops(stack)
    eid = int(api.execute("conformance/own/cancellable", payload={"url": url})["execution_id"])

    def running() -> dict[str, Any] | None:
        events = recorded_events(db, eid)
        return next((e for e in events if e["event_type"] == "command.started" and e["step"] == "wait"), None)

    started = wait_until(running, 60, "the wait step's command.started")
    cancelled = api.request("POST", f"/api/executions/{eid}/cancel", {"reason": "conformance cancel"})
    assert cancelled["status"] == "CANCELLED"

    run = finish(api, db, eid)
    assert run.status == "CANCELLED" and "conformance cancel" in str(run.view["error"])
    assert run.issued() == ["start", "wait"]  # nothing issued after the cancel
    command = db.execute(
        "SELECT event_id, status FROM noetl.command WHERE execution_id = %s AND step = 'wait'", (eid,)
    ).fetchone()
    assert command is not None and command["status"] == "CANCELLED"
    assert started["meta"]["command_id"] is not None
    # a claim of the cancelled command is refused
    claim = httpx.post(
        f"{stack.api_url}/api/commands/{command['event_id']}/claim",
        json={"worker_id": "conformance"},
        headers=stack.auth("NOETL_WORKER_TOKEN_SHARED"),
        timeout=10,
    )
    assert claim.status_code == 409, claim.text
    # the worker running it was told to stop (its heartbeat met a 409) and dropped the command
    wait_until(lambda: _stale_drops(stack) > before, 30, "the worker to drop the cancelled command")
    assert not [
        e for e in recorded_events(db, eid) if e["event_type"] == "command.completed" and e["step"] == "wait"
    ]
