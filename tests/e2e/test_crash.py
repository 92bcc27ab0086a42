"""A worker that dies mid-step: the command is redelivered, re-claimed and completes once."""

from __future__ import annotations

from typing import Any

import psycopg
from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev.testing import recorded_events, wait_for_event, wait_until

Conn = psycopg.Connection[dict[str, Any]]


def test_a_killed_worker_s_command_is_redelivered_and_completes_once(
    stack: Stack, api: Api, db: Conn
) -> None:
    started = api.execute("e2e/slow", payload={"seconds": 3})
    execution_id = int(started["execution_id"])
    wait_for_event(db, execution_id, "command.started", timeout=30)

    stack.kill("worker-shared")  # SIGKILL while the step's python is running
    stack.start_service("worker-shared")

    # Redelivery waits for the consumer's ack wait (30 s); a claim that still meets the dead
    # worker's lease is told to come back (429 + Retry-After), never dropped.
    final = api.wait(execution_id, timeout=90)
    assert final["status"] == "COMPLETED", final
    assert final["results"]["start"] == {"slept": 3}
    events = wait_for_event(db, execution_id, "playbook.completed", timeout=30)

    def of(event_type: str) -> list[dict[str, Any]]:
        return [e for e in events if e["event_type"] == event_type and e["step"] == "start"]

    claims = of("command.claimed")
    assert len(claims) >= 2, [e["event_type"] for e in events]
    assert len({c["meta"]["attempt"] for c in claims}) == len(claims)  # a new attempt per claim
    assert len(of("command.issued")) == 1
    assert len(of("command.completed")) == 1
    assert of("command.completed")[0]["meta"]["attempt"] == max(c["meta"]["attempt"] for c in claims)
    assert [e["event_type"] for e in events].count("playbook.completed") == 1
    wait_until(lambda: len(recorded_events(db, execution_id)) == len(events), 5, "no late events")
