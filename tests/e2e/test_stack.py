"""The stack's own controls: a crashed worker is restarted and work flows again."""

from __future__ import annotations

from noetl_cli import Api
from noetl_dev import Stack
from noetl_dev._pgroup import group_members


def test_a_killed_worker_restarts_and_runs_the_next_playbook(stack: Stack, api: Api) -> None:
    old_pid = stack.services["worker-shared"].pid
    assert old_pid is not None

    stack.kill("worker-shared")
    assert not stack.services["worker-shared"].alive()
    assert group_members(old_pid) == []
    stack.start_service("worker-shared")

    assert stack.services["worker-shared"].pid != old_pid
    started = api.execute("examples/hello", payload={"name": "again"})
    final = api.wait(started["execution_id"], timeout=90)
    assert final["status"] == "COMPLETED", final
    assert final["results"]["greet"]["message"] == "Hello, again!"
