"""Step logs on the real stack: a python step prints, writes to stderr and logs (a credential's
value among it), and it all comes back scrubbed through ``GET /api/executions/{id}/logs`` and
``noetl logs``, by step, and followed until the execution ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from noetl_cli import Api
from noetl_dev.testing import wait_until

REPO = Path(__file__).resolve().parents[2]

PLAIN = f"plain-{uuid.uuid4().hex}"  # no pattern matches it: only the worker's memory of it can redact it

PLAYBOOK = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: e2e_step_logs, path: e2e/step_logs}
workflow:
  - step: start
    tool:
      - name: read
        kind: secrets
        credential: e2e_logs_secret
      - name: talk
        kind: python
        input: {value: "{{ read.value.api_value }}"}
        code: |
          import logging, sys
          print("hello from start")
          print("the secret is", value)
          print("to stderr", file=sys.stderr)
          logging.getLogger("task").warning("careful with %s", value)
          result = {"printed": True}
    next: {spec: {mode: exclusive}, arcs: [{step: end}]}
  - step: end
    tool:
      kind: python
      code: |
        print("bye from end")
        result = 1
"""

# the same first step, then one that runs until the execution is cancelled
HELD = PLAYBOOK.replace("e2e_step_logs", "e2e_step_logs_held").replace("e2e/step_logs", "e2e/step_logs_held").replace(
    'print("bye from end")', "import time\n        time.sleep(600)"
)

START_LINES = [
    ("start", "stdout", None, "hello from start"),
    ("start", "stdout", None, "the secret is [REDACTED]"),
    ("start", "stderr", None, "to stderr"),
    ("start", "log", "WARNING", "careful with [REDACTED]"),
]


def _lines(items: list[dict[str, Any]]) -> list[tuple[str, str, str | None, str]]:
    return [(i["step"], i["stream"], i["level"], i["text"]) for i in items]


def _logs(api: Api, execution_id: int, **params: Any) -> dict[str, Any]:
    reply: dict[str, Any] = api.request("GET", f"/api/executions/{execution_id}/logs", params=params)
    return reply


def test_a_python_steps_output_comes_back_scrubbed_by_route_and_cli(
    api: Api, cli: Callable[..., Any], api_url: str, api_token: str
) -> None:
    api.put_credential("e2e_logs_secret", "generic", {"api_value": PLAIN})
    api.register(PLAYBOOK)
    api.register(HELD)

    execution_id = int(api.execute("e2e/step_logs")["execution_id"])
    final = api.wait(execution_id, timeout=60)
    assert final["status"] == "COMPLETED", final

    page = _logs(api, execution_id)
    assert page["execution_id"] == str(execution_id) and page["next_after"] is None and not page["truncated"]
    assert _lines(page["items"]) == [*START_LINES, ("end", "stdout", None, "bye from end")]
    seqs = [i["seq"] for i in page["items"]]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(i["attempt"] == 1 and i["command_id"] and i["at"].endswith("Z") for i in page["items"])
    first = _logs(api, execution_id, limit=1)
    assert first["items"] == page["items"][:1] and first["next_after"] == seqs[0]
    assert _logs(api, execution_id, after=seqs[-2])["items"] == page["items"][-1:]
    assert _lines(_logs(api, execution_id, step="end")["items"]) == [("end", "stdout", None, "bye from end")]
    assert PLAIN not in json.dumps(page)

    # the CLI: JSON Lines, --step, a table, and --follow of an execution that has ended
    as_json = cli("logs", str(execution_id), "-o", "json")
    assert as_json.code == 0, as_json.stderr
    assert [json.loads(line) for line in as_json.stdout.splitlines()] == page["items"]
    only_end = cli("logs", str(execution_id), "--step", "end", "-o", "json")
    assert [json.loads(line)["text"] for line in only_end.stdout.splitlines()] == ["bye from end"]
    table = cli("logs", str(execution_id))
    assert table.code == 0 and table.stdout.splitlines()[0].split() == ["SEQ", "AT", "STEP", "STREAM", "TEXT"]
    assert "log:WARNING" in table.stdout and "careful with [REDACTED]" in table.stdout
    ended = cli("logs", str(execution_id), "--follow", "-o", "json")
    assert ended.code == 0 and len(ended.stdout.splitlines()) == 5
    assert PLAIN not in as_json.stdout + table.stdout + ended.stdout

    # --follow of a running execution: lines as they come, and it ends when the execution does
    held = int(api.execute("e2e/step_logs_held")["execution_id"])
    wait_until(lambda: len(_logs(api, held)["items"]) == len(START_LINES), 60, "the first step's lines")
    follow = subprocess.Popen(
        [sys.executable, "-m", "noetl_cli", "--server", api_url, "logs", str(held), "--follow", "-o", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "NOETL_API_TOKEN": api_token},
    )
    try:
        assert follow.stdout is not None
        # the first step's lines are printed while the second step still runs
        printed = [json.loads(follow.stdout.readline()) for _ in START_LINES]
        assert _lines(printed) == START_LINES and follow.poll() is None
        api.cancel(held, "the test is done following")
        out, err = follow.communicate(timeout=60)
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert follow.returncode == 4, err  # CANCELLED
    assert out == "" and api.execution(held)["status"] == "CANCELLED"
