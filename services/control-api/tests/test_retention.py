"""``POST /api/internal/cleanup/purge`` with execution and event retention."""

from __future__ import annotations

from typing import Any


async def _finish(api: Any) -> int:
    """Run tests/linear to COMPLETED, every outbox row published."""
    execution_id = await api.execute()
    for n in (1, 2, 3):
        await api.run_command(execution_id, {"n": n})
    await api.db.execute(
        "UPDATE noetl.outbox SET status = 'PUBLISHED', published_at = now() WHERE execution_id = %s",
        (execution_id,),
    )
    cur = await api.db.execute("SELECT status FROM noetl.execution WHERE execution_id = %s", (execution_id,))
    assert (await cur.fetchone())[0] == "COMPLETED"
    return execution_id


async def _count(api: Any, table: str, execution_id: int) -> int:
    cur = await api.db.execute(f"SELECT count(*) FROM noetl.{table} WHERE execution_id = %s", (execution_id,))
    row = await cur.fetchone()
    return int(row[0])


async def _project_all(api: Any, execution_id: int) -> int:
    """Copy the execution's event outbox rows into the read model, as the projector would."""
    cur = await api.db.execute(
        "SELECT payload FROM noetl.outbox WHERE execution_id = %s AND subject LIKE 'noetl.events.%%'",
        (execution_id,),
    )
    events = [row[0] for row in await cur.fetchall()]
    reply = await api.client.post("/api/internal/events/project", json={"events": events}, headers=api.auth)
    assert reply.status_code == 200, reply.text
    return len(events)


async def test_old_terminal_executions_are_purged_with_all_their_rows(api: Any) -> None:
    await api.register()
    old = await _finish(api)
    recent = await _finish(api)
    running = await api.execute()
    projected = await _project_all(api, old)
    await api.db.execute(
        "UPDATE noetl.execution SET updated_at = now() - interval '10 days' WHERE execution_id = ANY(%s)",
        ([old, running],),
    )
    commands = await _count(api, "command", old)
    outbox = await _count(api, "outbox", old)
    # what the execution's steps left besides its rows: a keychain entry, a plug-in's object
    for execution_id in (old, recent):
        await api.db.execute(
            "INSERT INTO noetl.keychain (scope_id, name, value_enc) VALUES (%s, 'token', 'x')", (execution_id,)
        )
        await api.db.execute(
            "INSERT INTO noetl.object (key, digest, bytes) VALUES (%s, 'd', 'x')",
            (f"executions/{execution_id}/start/out.json",),
        )
        await api.db.execute(
            "INSERT INTO noetl.step_log (execution_id, command_id, step, attempt, stream, at, text)"
            " VALUES (%s, 1, 'start', 1, 'stdout', now(), 'printed')",
            (execution_id,),
        )
    reply = await api.client.post(
        "/api/internal/cleanup/purge",
        json={"executions_older_than_seconds": 7 * 86_400, "outbox_published_older_than_seconds": 86_400},
        headers=api.auth,
    )
    assert reply.status_code == 200, reply.text
    assert reply.json() == {
        "outbox_deleted": outbox,
        "executions_deleted": 1,
        "events_deleted": projected,
        "commands_deleted": commands,
        "results_deleted": 0,
        "keychain_deleted": 1,
        "objects_deleted": 1,
        "step_logs_deleted": 1,
    }
    for table in ("execution", "command", "outbox", "event", "step_log"):
        assert await _count(api, table, old) == 0, table
    assert await _count(api, "step_log", recent) == 1
    cur = await api.db.execute("SELECT scope_id FROM noetl.keychain")
    assert [r[0] for r in await cur.fetchall()] == [recent]
    cur = await api.db.execute("SELECT key FROM noetl.object")
    assert [r[0] for r in await cur.fetchall()] == [f"executions/{recent}/start/out.json"]
    # the recent one and the running one (old, but not terminal) are kept
    assert await _count(api, "execution", recent) == 1
    assert await _count(api, "execution", running) == 1


async def test_an_execution_with_unpublished_rows_is_kept(api: Any) -> None:
    await api.register()
    execution_id = await _finish(api)
    await api.db.execute(
        "UPDATE noetl.outbox SET status = 'PENDING' WHERE outbox_id = (SELECT max(outbox_id) FROM noetl.outbox"
        " WHERE execution_id = %s)",
        (execution_id,),
    )
    await api.db.execute("UPDATE noetl.execution SET updated_at = now() - interval '10 days'")
    reply = await api.client.post(
        "/api/internal/cleanup/purge", json={"executions_older_than_seconds": 86_400}, headers=api.auth
    )
    assert reply.json()["executions_deleted"] == 0
    assert await _count(api, "execution", execution_id) == 1


async def test_old_events_of_terminal_executions_are_trimmed(api: Any) -> None:
    await api.register()
    execution_id = await _finish(api)
    projected = await _project_all(api, execution_id)
    await api.db.execute(
        "UPDATE noetl.event SET created_at = now() - interval '3 days' WHERE execution_id = %s",
        (execution_id,),
    )
    reply = await api.client.post(
        "/api/internal/cleanup/purge", json={"events_older_than_seconds": 86_400}, headers=api.auth
    )
    assert reply.json()["events_deleted"] == projected > 0
    assert await _count(api, "execution", execution_id) == 1
    bad = await api.client.post(
        "/api/internal/cleanup/purge", json={"events_older_than_seconds": -1}, headers=api.auth
    )
    assert bad.status_code == 400


async def test_no_purge_is_wider_than_the_retention_policy(
    database_url: str, serve_app: Any, make_settings: Any, auth: Any
) -> None:
    from noetl_control_api import RetentionPolicy

    policy = RetentionPolicy(outbox_seconds=3600, executions_seconds=86_400, events_seconds=7200)
    async with serve_app(make_settings(database_url, retention=policy)) as http:
        for body in (
            {"executions_older_than_seconds": 0},
            {"events_older_than_seconds": 60},
            {"outbox_published_older_than_seconds": 0},
        ):
            reply = await http.post("/api/internal/cleanup/purge", json=body)  # the admin
            assert reply.status_code == 400, (body, reply.text)
            assert "retention policy" in reply.json()["detail"] and "NOETL_RETENTION_" in reply.json()["detail"]
        at_policy = await http.post(
            "/api/internal/cleanup/purge",
            json={"outbox_published_older_than_seconds": 3600, "executions_older_than_seconds": 86_400},
        )
        assert at_policy.status_code == 200
        # the system pool applies the policy as it stands; the shared pool may not purge at all
        swept = await http.post("/api/internal/cleanup/purge", json={"policy": True}, headers=auth.SYSTEM_WORKER)
        assert swept.status_code == 200 and swept.json()["executions_deleted"] == 0
        shared = await http.post("/api/internal/cleanup/purge", json={"policy": True}, headers=auth.WORKER)
        assert shared.status_code == 403
