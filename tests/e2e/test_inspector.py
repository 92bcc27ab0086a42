"""The run inspector (/ui) in a real headless Chromium against the real stack: sign in, find
runs, read a failed run, watch one finish live, cancel one; step logs and restart-from-step
(the routes of the step-logs and rerun contract) in their own test."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from noetl_cli import Api
from noetl_dev.browser import chromium

CONFORMANCE = Path(__file__).resolve().parents[1] / "conformance" / "playbooks"
#: how long the browser waits for a condition on the page (ms); a bound, not a pace
WAIT_MS = 60_000


@pytest.fixture(scope="module")
def operator_token(api_url: str, auth: dict[str, str]) -> str:
    made = httpx.post(f"{api_url}/api/tokens", json={"name": "inspector-operator", "role": "operator"}, headers=auth)
    assert made.status_code == 201, made.text
    return str(made.json()["token"])


@pytest.fixture(scope="module")
def parent_playbooks(api: Api) -> None:
    """A playbook that starts child executions (the playbook tool), from the conformance set."""
    for name in ("child", "parent"):
        api.register_file(CONFORMANCE / f"{name}.yaml")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as running:
        yield running


@pytest.fixture
def page(browser: Any, api_url: str, operator_token: str) -> Iterator[Any]:
    """A fresh browser context signed in through the login form as an operator."""
    context = browser.new_context(viewport={"width": 1300, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.goto(f"{api_url}/ui")
    assert tab.url.endswith("/ui/login")
    tab.fill("#token", operator_token)
    tab.click("#sign-in")
    tab.wait_for_selector("#runs")
    assert operator_token not in tab.url
    yield tab
    context.close()
    assert not errors, errors


def _open_run(page: Any, api_url: str, execution_id: str, *, finished: bool = True) -> None:
    """Open a run page; a finished run's once its log holds the terminal event (the page
    follows the stream until then: the read model may lag the execution's end)."""
    page.goto(f"{api_url}/ui/runs/{execution_id}")
    page.wait_for_selector("body[data-ready='1'][data-complete='1']" if finished else "body[data-ready='1']")


def test_find_and_read_a_failed_run(page: Any, api: Api, api_url: str) -> None:
    failed = api.wait(api.execute("e2e/fail")["execution_id"], timeout=60)
    assert failed["status"] == "FAILED"
    eid = str(failed["execution_id"])
    page.goto(f"{api_url}/ui")
    page.select_option("select[name=status]", "FAILED")
    page.fill("input[name=path]", "e2e/fail")
    page.click("#filters button[type=submit]")
    page.wait_for_selector(f"#runs tr[data-id='{eid}']")
    assert page.locator("#runs tbody tr").evaluate_all("rows => rows.map(r => r.dataset.status)") == ["FAILED"] * page.locator("#runs tbody tr").count()
    page.click(f"#runs a.run[href='/ui/runs/{eid}']")
    page.wait_for_selector("body[data-ready='1'][data-complete='1']")
    assert page.locator("#run-status").inner_text() == "FAILED"
    assert [r.get_attribute("data-step") for r in page.locator("#steps tbody tr").all()] == ["start", "explode", "end"]
    assert page.locator(".arc.fired[data-source='start'][data-target='explode']").count() == 1
    # An arc without `when` is taken after a failed call too (upstream's recovery routing);
    # the run still ends FAILED with the error of the step that raised it.
    assert page.locator(".arc.fired[data-source='explode'][data-target='end']").count() == 1
    error = page.locator("#run-error")
    assert error.get_attribute("data-step") == "explode" and "e2e failure: boom" in error.inner_text()
    page.click("#steps tr[data-step='explode']")
    assert "e2e failure: boom" in page.locator("#step-detail .step-error").inner_text()
    page.wait_for_selector("#replay.ok")
    assert page.locator("#replay").inner_text() == "replay = stored state"
    page.select_option("#event-filters select[name=event_type]", "next.evaluated")
    # Three routing decisions: after start, after explode's error, after end.
    page.wait_for_function("() => [...document.querySelectorAll('#events tbody tr')].length === 3")
    rows = page.locator("#events tbody tr").evaluate_all("rows => rows.map(r => [r.dataset.type, r.dataset.step])")
    assert rows == [["next.evaluated", "start"], ["next.evaluated", "explode"], ["next.evaluated", "end"]]


def test_a_loop_collapses_into_one_row_and_children_are_linked(
    page: Any, api: Api, api_url: str, parent_playbooks: None
) -> None:
    loop = api.wait(api.execute("e2e/loop_many", payload={"count": 30})["execution_id"], timeout=120)
    assert loop["status"] == "COMPLETED"
    _open_run(page, api_url, str(loop["execution_id"]))
    row = page.locator("#gantt .row.loop[data-step='square']")
    assert row.get_attribute("data-count") == "30" and "30/30 done" in row.inner_text()
    assert page.locator("#gantt .row[data-step='square']").count() == 1
    parent = api.wait(api.execute("conformance/own/parent")["execution_id"], timeout=120)
    assert parent["status"] == "COMPLETED"
    _open_run(page, api_url, str(parent["execution_id"]))
    assert page.locator("#children a").count() == 2
    page.locator("#children a").first.click()
    page.wait_for_selector("body[data-ready='1'][data-complete='1']")
    assert page.locator("#run-meta a").first.inner_text() == str(parent["execution_id"])


def test_the_runs_list_shows_status_live(page: Any, api: Api, api_url: str) -> None:
    eid = str(api.execute("e2e/slow", payload={"seconds": 4})["execution_id"])
    page.goto(f"{api_url}/ui?path=e2e/slow")
    page.wait_for_selector(f"#runs tr[data-id='{eid}'][data-status='RUNNING']")
    page.evaluate("() => { window.__samePage = true; }")
    page.wait_for_selector(f"#runs tr[data-id='{eid}'][data-status='COMPLETED']")
    assert page.evaluate("() => window.__samePage") is True


def test_a_running_execution_finishes_live(page: Any, api: Api, api_url: str) -> None:
    eid = str(api.execute("e2e/slow", payload={"seconds": 4})["execution_id"])
    _open_run(page, api_url, eid, finished=False)
    page.wait_for_selector("body[data-status='RUNNING'] #live.ok")
    page.evaluate("() => { window.__samePage = true; }")
    page.wait_for_selector("body[data-status='COMPLETED']")
    assert page.evaluate("() => window.__samePage") is True  # followed over SSE, not reloaded
    assert page.locator("#steps tr[data-step='start'] .status").inner_text() == "COMPLETED"
    assert page.locator("#events tbody tr[data-type='playbook.completed']").count() == 1


def test_an_operator_cancels_a_run(page: Any, api: Api, api_url: str) -> None:
    eid = str(api.execute("e2e/slow", payload={"seconds": 120})["execution_id"])
    _open_run(page, api_url, eid, finished=False)
    page.wait_for_selector("#cancel:not([hidden])")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#cancel")
    page.wait_for_selector("body[data-status='CANCELLED']")
    assert api.wait(eid, timeout=30)["status"] == "CANCELLED"


def test_step_logs_and_restart_from_a_step(page: Any, api: Api, api_url: str) -> None:
    """Against the step-logs and rerun routes: a failed step's log lines, then a dry run, a
    confirmed restart from that step, and the new run linked to the old."""
    failed = api.wait(api.execute("e2e/chatty")["execution_id"], timeout=60)
    assert failed["status"] == "FAILED"
    old = str(failed["execution_id"])
    _open_run(page, api_url, old)
    page.click("#steps tr[data-step='explode']")
    page.wait_for_function("() => /about to fail/.test(document.querySelector('#logs').textContent)")
    page.click("#restart")
    page.select_option("#restart-step", "explode")
    page.click("#restart-preview")
    page.wait_for_selector("#restart-rerun")
    assert "explode" in page.locator("#restart-rerun").inner_text()
    assert "start" in page.locator("#restart-plan").inner_text()
    page.click("#restart-confirm")
    page.wait_for_url(re.compile(r"/ui/runs/(?!" + old + r")\d+$"))
    page.wait_for_selector("body[data-ready='1']")
    new = page.url.rsplit("/", 1)[1]
    assert page.locator("#rerun-of").inner_text() == old
    assert page.locator("#steps tr[data-step='start'] .status").inner_text() == "REUSED"
    page.click("#rerun-of")
    page.wait_for_selector(f"#run-meta a.rerun[href='/ui/runs/{new}']")
