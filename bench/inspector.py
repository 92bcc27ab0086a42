"""The run inspector's run page in a real browser (headless Debian chromium, Playwright): a
finished parallel loop of N items (1,000 by default), the time from navigation to the page
drawn from the summary route (graph, timeline, steps), and the summary route alone."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import httpx
from noetl_dev import Stack
from noetl_dev.browser import chromium

PLAYBOOK = Path(__file__).parent / "playbooks" / "inspector_loop.yaml"
#: the target: the run page of a finished 1,000-item loop execution renders within 1 s
TARGET_MS = 1000.0


def _loop_execution(http: httpx.Client, items: int) -> str:
    http.post("/api/catalog/register", json={"content": PLAYBOOK.read_text()}).raise_for_status()
    started = http.post("/api/execute", json={"path": "bench/inspector_loop", "payload": {"count": items}})
    started.raise_for_status()
    eid = str(started.json()["execution_id"])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        view = http.get(f"/api/executions/{eid}", params={"wait": 60}).json()
        if view["status"] != "RUNNING":
            assert view["status"] == "COMPLETED", view
            return eid
    raise TimeoutError(f"the {items}-item loop did not finish in 600 s")


def measure(stack: Stack, items: int, runs: int) -> dict[str, Any]:
    with httpx.Client(base_url=stack.api_url, headers=stack.auth(), timeout=120) as http:
        eid = _loop_execution(http, items)
        summary_ms, summary_bytes = [], 0
        for _ in range(max(3, runs)):
            t0 = time.perf_counter()
            reply = http.get(f"/api/executions/{eid}/summary")
            summary_ms.append((time.perf_counter() - t0) * 1000)
            summary_bytes = len(reply.content)
        events = int(reply.json()["events"])
    render_ms: list[float] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1300, "height": 1000})
        page.goto(f"{stack.api_url}/ui/login")
        page.fill("#token", stack.token)
        page.click("#sign-in")
        page.wait_for_selector("#runs")
        for _ in range(runs + 1):  # the first visit warms the caches and is not counted
            page.goto(f"{stack.api_url}/ui/runs/{eid}")
            page.wait_for_selector("body[data-ready='1'] #gantt .row.loop", timeout=30_000)
            # ms from the start of the navigation to the page drawn, as the page noted it
            render_ms.append(float(page.evaluate("() => document.body.dataset.readyAt")))
            # the replay badge's request (after the page is drawn) ends before the next visit
            page.wait_for_selector("#replay.ok, #replay.bad", timeout=60_000)
        render_ms = render_ms[1:]
    return {
        "items": items,
        "events": events,
        "runs": runs,
        "render_p50_ms": statistics.median(render_ms),
        "render_max_ms": max(render_ms),
        "summary_p50_ms": statistics.median(summary_ms),
        "summary_bytes": summary_bytes,
        "target_ms": TARGET_MS,
    }


def markdown_rows(figures: dict[str, Any]) -> list[str]:
    if "inspector" not in figures:
        return []
    f = figures["inspector"]
    return [
        f"| run page of a finished {f['items']:,}-item loop ({f['events']:,} events) in headless chromium,"
        f" navigation → drawn, p50 / max of {f['runs']} | {f['render_p50_ms']:.0f} / {f['render_max_ms']:.0f} ms"
        f" | < {f['target_ms']:.0f} ms | |",
        f"| same, `GET /api/executions/{{id}}/summary` alone p50 ({f['summary_bytes']:,} bytes)"
        f" | {f['summary_p50_ms']:.0f} ms | | |",
    ]
