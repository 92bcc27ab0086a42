"""Upstream's current form across the worker: task errors shaped {kind, retryable, code} that
rules retry on, output.select on a task's result, and a failed call routed to a recovery step
with event and error in scope; the event log replays to the stored state."""

from __future__ import annotations

from typing import Any

import psycopg
from noetl_cli import Api
from noetl_dev.testing import wait_for_event

Conn = psycopg.Connection[dict[str, Any]]

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_canonical_errors, path: e2e/canonical_errors}
workflow:
  - step: start
    tool:
      - name: call
        kind: python
        input: {attempt: "{{ _attempt }}"}
        code: |
          if attempt < 2:
              result = {"status": "error", "error_kind": "rate_limit", "retryable": True,
                        "code": "QUOTA", "error": "slow down"}
          else:
              result = {"data": {"id": 42, "items": [{"name": "a"}]}, "attempts": attempt}
        output:
          select: [data.id, {path: "data.items[0].name", as: first}, attempts]
        spec:
          policy:
            rules:
              - when: "{{ output.status == 'error' and output.error.retryable }}"
                then: {do: retry, attempts: 3, delay: 0}
              - else:
                  then: {do: continue}
    next:
      spec: {mode: exclusive}
      arcs:
        - step: use
          when: "{{ event.name == 'call.done' and output.data.id == 42 }}"
          input: {id: "{{ start.id }}", first: "{{ start.first }}"}
  - step: use
    tool: {kind: python, code: "raise KeyError('missing ' + first)"}
    next:
      spec: {mode: exclusive}
      arcs:
        - step: done
          when: "{{ event.name == 'call.done' }}"
        - step: recover
          when: "{{ event.name == 'call.error' and not error.retryable }}"
          input:
            kind: "{{ error.kind }}"
            code: "{{ error.code }}"
            type: "{{ error.type }}"
            seen: "{{ use.status }}"
            id: "{{ args.id }}"
  - step: done
    tool: {kind: python, code: "result = 'not reached'"}
  - step: recover
    tool: {kind: python, code: "result = {'kind': kind, 'code': code, 'type': type, 'seen': seen, 'id': id}"}
"""


def test_errors_route_to_recovery_with_upstreams_shape(api: Api, db: Conn) -> None:
    entry = api.register(PLAYBOOK)
    started = api.execute(entry["path"], version=entry["version"])
    execution_id = int(started["execution_id"])
    final = api.wait(execution_id, timeout=90)

    # the retryable error was retried inside the pipeline; select shaped the step's result
    start = final["results"]["start"]
    assert {k: v for k, v in start.items() if k != "_inline"} == {"id": 42, "first": "a", "attempts": 2}
    assert start["_inline"]["data"]["items"] == [{"name": "a"}]
    # the failed call of `use` took the recovery arc, with the error in scope
    assert final["results"]["recover"] == {
        "kind": "tool_error",
        "code": None,
        "type": "KeyError",
        "seen": "error",
        "id": 42,
    }
    assert "done" not in final["results"]
    use = final["results"]["use"]
    assert use["status"] == "error" and use["error"]["retryable"] is False
    # a routed error still ends the execution FAILED, naming the step, once recovery is done
    assert final["status"] == "FAILED"
    assert "step 'use' failed" in str(final["error"]) and "missing a" in str(final["error"])

    events = wait_for_event(db, execution_id, "playbook.failed")
    issued = [e["step"] for e in events if e["event_type"] == "command.issued"]
    assert issued == ["start", "use", "recover"]
    failed = next(e for e in events if e["event_type"] == "command.failed")
    error = failed["context"]["error"]
    assert (error["kind"], error["retryable"], error["type"], error["task"]) == (
        "tool_error",
        False,
        "KeyError",
        "use",
    )
    routed = next(e for e in events if e["event_type"] == "next.evaluated" and e["step"] == "use")
    assert routed["context"]["fired"] == ["recover"] and routed["context"]["after"] == "call.error"
    assert not [e for e in events if e["event_type"] == "playbook.completed"]

    report: dict[str, Any] = api.request("GET", f"/api/executions/{execution_id}/replay")
    assert report["log_complete"] and report["matches"], report["differences"]
