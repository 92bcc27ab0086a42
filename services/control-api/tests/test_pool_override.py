"""``execution_pool`` at execute time: never onto the system pool for a non-system playbook."""

from __future__ import annotations

from typing import Any

SYSTEM = """\
apiVersion: noetl.io/v2
kind: Playbook
metadata: {name: sys_probe, path: system/probe}
workflow:
  - step: start
    tool: {kind: python, code: "result = {'ok': True}"}
"""


async def test_a_user_playbook_cannot_be_sent_to_the_system_pool(api: Any) -> None:
    await api.register()
    refused = await api.client.post("/api/execute", json={"path": "tests/linear", "execution_pool": "system"})
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "forbidden"
    assert refused.json()["extra"] == {"field": "execution_pool"}
    other = await api.client.post("/api/execute", json={"path": "tests/linear", "execution_pool": "python"})
    assert other.status_code == 400 and other.json()["error"] == "validation_error"
    cur = await api.db.execute("SELECT count(*) FROM noetl.execution")
    assert (await cur.fetchone()) == (0,)  # nothing was started


async def test_a_system_playbook_runs_on_the_system_pool(api: Any) -> None:
    await api.register(SYSTEM)
    started = await api.client.post("/api/execute", json={"path": "system/probe", "execution_pool": "system"})
    assert started.status_code == 201, started.text
    (command,) = await api.open_commands(int(started.json()["execution_id"]))
    cur = await api.db.execute(
        "SELECT pool FROM noetl.command WHERE command_id = %s", (command["command_id"],)
    )
    assert (await cur.fetchone()) == ("system",)
    wrong = await api.client.post("/api/execute", json={"path": "system/probe", "execution_pool": "shared"})
    assert wrong.status_code == 400
