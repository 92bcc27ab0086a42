"""Step logs: kept with the terminal events they come with, once, and read back in pages."""

from __future__ import annotations

from typing import Any

from noetl_control_api import store

LINE_AT = "2026-01-02T03:04:05.000006Z"


def _line(text: str, stream: str = "stdout", **extra: Any) -> dict[str, Any]:
    return {"stream": stream, "at": LINE_AT, "text": text, **extra}


async def _finish(api: Any, execution_id: int, lines: list[dict[str, Any]], *, also: int | None = None) -> Any:
    """Claim the open command and complete it with ``lines`` as its step log (and a log for
    command ``also``, which this batch does not finish)."""
    command = await api.hold(execution_id)
    meta = {"command_id": command["command_id"], "attempt": command["attempt"]}
    done = {
        "execution_id": execution_id,
        "event_type": "command.completed",
        "step": command["step"],
        "meta": meta,
        "context": {"result": {"n": 1}},
        "event_id": api.ids.next_id(),
        "worker_id": "w1",
    }
    logs = [{"command_id": command["command_id"], "lines": lines}]
    if also is not None:
        logs.append({"command_id": also, "lines": [_line("not this batch's")]})
    body = {"events": [done], "logs": logs}
    reply = await api.post_events(body)
    assert reply.status_code == 200, reply.text
    return command, body


async def test_logs_come_with_the_terminal_batch_once_and_page_in_seq_order(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    start, body = await _finish(
        api,
        execution_id,
        [
            _line("hello"),
            _line("careful", "log", level="WARNING"),
            _line("token Bearer abcdefghijklmnopqrstuvwxyz", "stderr"),
        ],
    )
    again = await api.post_events(body)  # the worker's retry after a lost reply: nothing twice
    assert again.json() == {"accepted": 0, "duplicates": 1}
    second, _ = await _finish(
        api,
        execution_id,
        [_line("second"), _line("[9 more bytes of output dropped]", "log", level="WARNING", truncated=True)],
        also=start["command_id"],
    )

    page = (await api.client.get(f"/api/executions/{execution_id}/logs", params={"limit": 2})).json()
    rest = (
        await api.client.get(f"/api/executions/{execution_id}/logs", params={"after": page["next_after"]})
    ).json()
    only = (await api.client.get(f"/api/executions/{execution_id}/logs", params={"step": "start"})).json()

    assert page["execution_id"] == str(execution_id) and page["truncated"] is True
    first = page["items"][0]
    assert first == {
        "seq": first["seq"],
        "step": "start",
        "command_id": str(start["command_id"]),
        "attempt": 1,
        "stream": "stdout",
        "level": None,
        "at": LINE_AT,
        "text": "hello",
    }
    items = page["items"] + rest["items"]
    assert [i["seq"] for i in items] == sorted(i["seq"] for i in items) and rest["next_after"] is None
    assert [(i["step"], i["stream"], i["level"], i["text"]) for i in items] == [
        ("start", "stdout", None, "hello"),
        ("start", "log", "WARNING", "careful"),
        # scrubbed again on the way in: a worker may not have
        ("start", "stderr", None, "token [REDACTED]"),
        ("second", "stdout", None, "second"),
        ("second", "log", "WARNING", "[9 more bytes of output dropped]"),
    ]
    assert second["step"] == "second"
    assert [i["text"] for i in only["items"]] == ["hello", "careful", "token [REDACTED]"]
    assert only["truncated"] is False and only["next_after"] is None


async def test_logs_of_an_unknown_execution_are_404_and_bounds_are_400(api: Any) -> None:
    assert (await api.client.get("/api/executions/123456789/logs")).status_code == 404
    await api.register()
    execution_id = await api.execute()
    empty = await api.client.get(f"/api/executions/{execution_id}/logs")
    assert empty.json() == {"execution_id": str(execution_id), "items": [], "next_after": None, "truncated": False}
    for params in ({"limit": 0}, {"limit": 5001}, {"after": -1}, {"step": "s" * 201}):
        reply = await api.client.get(f"/api/executions/{execution_id}/logs", params=params)
        assert reply.status_code == 400, params


async def test_a_stale_attempt_keeps_no_log(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    command = await api.hold(execution_id)
    await api.db.execute(
        "UPDATE noetl.command SET lease_expires_at = now() - interval '1 second' WHERE command_id = %s",
        (command["command_id"],),
    )
    assert (await api.claim(command["event_id"], "w2")).json()["attempt"] == 2
    meta = {"command_id": command["command_id"], "attempt": 1}
    stale = {
        "events": [
            {
                "execution_id": execution_id,
                "event_type": "command.completed",
                "step": "start",
                "meta": meta,
                "context": {"result": 1},
                "event_id": api.ids.next_id(),
                "worker_id": "w1",
            }
        ],
        "logs": [{"command_id": command["command_id"], "lines": [_line("from the stale attempt")]}],
    }
    assert (await api.post_events(stale)).status_code == 409
    assert (await api.client.get(f"/api/executions/{execution_id}/logs")).json()["items"] == []


async def test_what_postgres_could_not_store_is_shown_not_refused(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await _finish(api, execution_id, [_line("nul \x00 here"), {"stream": "stdout", "at": "not a time", "text": "t"}])

    items = (await api.client.get(f"/api/executions/{execution_id}/logs")).json()["items"]

    assert [i["text"] for i in items] == ["nul \\x00 here", "t"]
    assert items[1]["at"].endswith("Z") and items[1]["at"] != LINE_AT
    reply = await api.client.get(f"/api/executions/{execution_id}/logs", params={"step": "a\x00b"})
    assert reply.status_code == 400


async def test_a_page_stops_at_its_byte_budget_with_at_least_one_line(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await _finish(api, execution_id, [_line(c * 100) for c in "abc"])

    two, more = await store.step_logs.page(api.db, execution_id, step=None, after=0, limit=10, max_bytes=150)
    one, cut = await store.step_logs.page(api.db, execution_id, step=None, after=0, limit=10, max_bytes=1)
    last, done = await store.step_logs.page(
        api.db, execution_id, step=None, after=two[-1].seq, limit=10, max_bytes=150
    )

    assert [r.text[0] for r in two] == ["a", "b"] and more
    assert [r.text[0] for r in one] == ["a"] and cut
    assert [r.text[0] for r in last] == ["c"] and not done
