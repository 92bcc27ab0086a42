"""``POST /api/executions/{id}/rerun`` with ``from_step``: read from the earlier execution's
projected log, refused while that log lags, the new execution linked by ``rerun_of``."""

from __future__ import annotations

from typing import Any


async def _failed_at_end(api: Any) -> int:
    """A run of tests/linear whose start and second completed and whose end failed."""
    await api.register()
    execution_id = int(await api.execute())
    await api.run_command(execution_id, {"n": 1})
    await api.run_command(execution_id, {"n": 2})
    command = await api.hold(execution_id)
    failed = {
        "execution_id": execution_id,
        "event_type": "command.failed",
        "step": "end",
        "meta": {"command_id": command["command_id"], "attempt": command["attempt"]},
        "context": {"error": {"message": "boom"}},
        "event_id": api.ids.next_id(),
        "worker_id": "w1",
    }
    assert (await api.post_events(failed)).status_code == 200
    view = (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert view["status"] == "FAILED" and view["rerun_of"] is None
    return execution_id


async def test_a_rerun_waits_for_the_log_then_reuses_the_steps_before_the_restart_point(
    api: Any, auth: Any
) -> None:
    old = await _failed_at_end(api)
    url = f"/api/executions/{old}/rerun"

    lagging = await api.client.post(url, json={"from_step": "end"})
    assert lagging.status_code == 409 and "not projected yet" in lagging.json()["detail"], lagging.text
    await api.project(old)
    planned = await api.client.post(url, json={"from_step": "end", "dry_run": True})
    assert planned.status_code == 200, planned.text
    plan = {"rerun_of": str(old), "from_step": "end", "reused": ["start", "second"], "rerun": ["end"]}
    assert planned.json() == plan
    worker = await api.client.post(url, json={"from_step": "end"}, headers=auth.WORKER)
    assert worker.status_code == 403, worker.text

    started = await api.client.post(url, json={"from_step": "end"})

    assert started.status_code == 201, started.text
    new = int(started.json()["execution_id"])
    assert started.json() == {**plan, "execution_id": str(new)}
    assert [c["step"] for c in await api.open_commands(new)] == ["end"]
    view = (await api.client.get(f"/api/executions/{new}")).json()
    assert view["rerun_of"] == str(old) and view["ctx"] == {
        "total": 2
    }  # the arc's set, from the reused result
    await api.run_command(new, {"n": 3})
    view = (await api.client.get(f"/api/executions/{new}")).json()
    assert view["status"] == "COMPLETED" and view["results"] == {
        "start": {"n": 1},
        "second": {"n": 2},
        "end": {"n": 3},
    }
    replayed = await api.replay(new)
    assert replayed["matches"] and replayed["log_complete"], replayed["differences"]
    assert replayed["outcomes"] == 3  # two reused, one run


async def test_rerun_flags_without_a_step_are_refused(api: Any) -> None:
    old = await _failed_at_end(api)
    reply = await api.client.post(f"/api/executions/{old}/rerun", json={"dry_run": True})
    assert reply.status_code == 400 and "from_step" in reply.json()["detail"], reply.text
