"""Conformance suite helpers: where the shared set lives, and how a finished execution is checked.

The playbooks are read straight from the shared set (``noetl_dev.testing.conformance_dir``:
``NOETL_CONFORMANCE_DIR``, default ``../shared/conformance`` from the repository root):
``upstream/`` (18 verbatim NoETL v2 playbooks, expected values in its ``INDEX.md``) and
``e2e-fixtures/`` (13). When that folder is absent the suite stops at collection with an
error naming the folder and the variable. ``tests/conformance/playbooks/`` holds the suite's
own playbooks.

Every test that runs an execution finishes with :func:`finish`, which also asserts that the
state rebuilt from the execution's events (``GET /api/executions/{id}/replay``) equals the
stored one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from noetl_cli import Api
from noetl_dev.testing import conformance_dir, wait_until

CONFORMANCE = conformance_dir()
UPSTREAM = CONFORMANCE / "upstream"
FIXTURES = CONFORMANCE / "e2e-fixtures"
OWN = Path(__file__).resolve().parent / "playbooks"
TERMINAL_EVENTS = {
    "playbook.completed": "COMPLETED",
    "playbook.failed": "FAILED",
    "playbook.cancelled": "CANCELLED",
}
#: users served by the paginated route of the local HTTP server (test_pagination_offset expects 35)
PAGED_USERS = [{"id": i, "name": f"user_{i}"} for i in range(1, 36)]

Conn = psycopg.Connection[dict[str, Any]]


@dataclass
class Finished:
    """An execution at its end: the API view, its projected events and the replay report."""

    execution_id: int
    view: dict[str, Any]
    events: list[dict[str, Any]]
    replay: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.view["status"])

    @property
    def results(self) -> dict[str, Any]:
        results: dict[str, Any] = self.view.get("results") or {}
        return results

    def ran(self, step: str) -> int:
        """How many times ``step`` ran (its ``step.enter`` events, skipped ones excluded)."""
        return sum(
            1
            for e in self.events
            if e["event_type"] == "step.enter" and e["step"] == step and e["status"] != "SKIPPED"
        )

    def issued(self) -> list[str]:
        return [e["step"] for e in self.events if e["event_type"] == "command.issued"]


def finish(api: Api, db: Conn, execution_id: int | str, timeout: float = 120.0) -> Finished:
    """Wait for the terminal state and its projected event, then assert replay == stored state."""
    eid = int(execution_id)
    view = api.wait(eid, timeout=timeout, interval=0.05)

    def landed() -> list[dict[str, Any]] | None:
        events = db.execute(
            "SELECT event_id, event_type, step, status, created_at, context, meta FROM noetl.event"
            " WHERE execution_id = %s ORDER BY event_id",
            (eid,),
        ).fetchall()
        done = [e for e in events if e["event_type"] in TERMINAL_EVENTS]
        return events if done else None

    events = wait_until(landed, 60.0, f"the terminal event of execution {eid} in noetl.event")
    assert (
        TERMINAL_EVENTS[next(e for e in events if e["event_type"] in TERMINAL_EVENTS)["event_type"]]
        == view["status"]
    )
    report: dict[str, Any] = api.request("GET", f"/api/executions/{eid}/replay")
    assert report["log_complete"], report
    assert report["matches"], json.dumps(report["differences"], default=str)[:4000]
    return Finished(eid, view, events, report)
