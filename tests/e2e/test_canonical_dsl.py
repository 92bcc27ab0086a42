"""Upstream NoETL's canonical playbook form through the real stack (``playbooks/canonical.yaml``):
what crosses the worker (retry with ``backoff: none``, filters rendered there, a child started
and not waited for) and what the control-api refuses at registration (unknown keys)."""

from __future__ import annotations

from typing import Any

import httpx
import psycopg
from noetl_cli import Api
from noetl_dev.testing import wait_for_event

Conn = psycopg.Connection[dict[str, Any]]

UNKNOWN_KEY = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_case, path: e2e/case}
workflow:
  - step: start
    case: [{when: "{{ true }}", then: [{step: end}]}]
    tool: {kind: python, code: "result = 1", retry: 3}
  - step: end
"""


def test_canonical_playbook_runs_and_its_child_is_not_waited_for(api: Api, db: Conn) -> None:
    started = api.execute("e2e/canonical")
    parent_id = int(started["execution_id"])
    final = api.wait(parent_id, timeout=120)

    assert final["status"] == "COMPLETED", final.get("error")
    results = final["results"]
    # entry_step `begin`; the retry with backoff none (delay 3600 ignored) succeeded on attempt 3;
    # the codec filters rendered on the worker
    assert results["begin"] == {"enc": "YWRh", "dec": "ada", "n": 2, "js": '{"a": 2, "b": 1}', "attempts": 3}
    # max_in_flight rendered from the workload string "2"; results in input order
    assert results["fan"] == {"results": [10, 20, 30]}
    assert "never" not in results
    # the final step started a child that fails, without waiting for it: the parent completed anyway
    fired = results["wrap_up"]
    assert fired["status"] == "started" and fired["async"] is True and fired["path"] == "e2e/canonical_child"
    assert final["result"] == fired  # the quiet dead end of `fan` is not the run's end
    child = api.wait(fired["execution_id"], timeout=120)
    assert child["status"] == "FAILED" and "child refused 7" in (child.get("error") or "")
    assert str(child["parent_execution_id"]) == str(parent_id)

    events = wait_for_event(db, parent_id, "playbook.completed")  # the projector writes them
    issued = [e["step"] for e in events if e["event_type"] == "command.issued"]
    assert issued[0] == "begin" and issued[-1] == "wrap_up" and issued.count("fan") == 3


def test_an_unknown_key_is_refused_at_registration_naming_step_and_key(
    api_url: str, auth: dict[str, str]
) -> None:
    reply = httpx.post(
        f"{api_url}/api/catalog/register", json={"content": UNKNOWN_KEY}, headers=auth, timeout=10
    )

    assert reply.status_code == 422, reply.text
    error = reply.json()
    assert error["error"] == "invalid_playbook"
    assert error["extra"] == {"step": "start", "field": "case"}
    assert "unknown key 'case'" in error["detail"]
