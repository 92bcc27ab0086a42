"""Internal projection into the read model, and the public events route that reads it."""

from __future__ import annotations

from typing import Any


def _events(execution_id: int, ids: list[int]) -> list[dict[str, Any]]:
    return [
        {
            "execution_id": execution_id,
            "event_id": event_id,
            "event_type": "step.enter",
            "step": "start",
            "created_at": "2026-01-02T03:04:05.000006Z",
            "context": {"n": event_id, "token": "s3cr3t-value"},
            "meta": {"command_id": "12"},
        }
        for event_id in ids
    ]


async def _project(api: Any, events: list[dict[str, Any]]) -> Any:
    return await api.client.post("/api/internal/events/project", json={"events": events}, headers=api.auth)


async def test_project_counts_new_and_duplicate_events(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    first = await _project(api, _events(execution_id, [30, 10, 20]))
    assert first.status_code == 200 and first.json() == {"projected": 3, "duplicates": 0}
    again = await _project(api, _events(execution_id, [20, 40, 40]))
    assert again.json() == {"projected": 1, "duplicates": 2}

    listed = (await api.client.get(f"/api/executions/{execution_id}/events")).json()["events"]
    assert [e["event_id"] for e in listed] == [10, 20, 30, 40]
    assert listed[0]["created_at"] == "2026-01-02T03:04:05.000006Z"
    assert listed[0]["context"] == {"n": 10, "token": "[REDACTED]"}
    page = (
        await api.client.get(f"/api/executions/{execution_id}/events", params={"after": 10, "limit": 2})
    ).json()
    assert [e["event_id"] for e in page["events"]] == [20, 30]


async def test_project_whole_outbox_round_trip(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    payloads = [
        r["payload"] for r in await api.outbox(execution_id) if r["subject"].startswith("noetl.events.")
    ]
    reply = await _project(api, payloads)
    assert reply.json() == {"projected": len(payloads), "duplicates": 0}
    listed = (await api.client.get(f"/api/executions/{execution_id}/events")).json()["events"]
    assert listed == payloads


async def test_project_rejects_events_without_ids(api: Any) -> None:
    reply = await _project(api, [{"execution_id": 1, "event_type": "x"}])
    assert reply.status_code == 400 and reply.json()["error"] == "validation_error"
    assert (
        await _project(api, [{"execution_id": 2**70, "event_id": 1, "event_type": "x"}])
    ).status_code == 400
    assert (await _project(api, [])).json() == {"projected": 0, "duplicates": 0}
    bad_time = _events(5, [1])
    bad_time[0]["created_at"] = "yesterday"
    assert (await _project(api, bad_time)).json() == {"projected": 1, "duplicates": 0}


async def test_events_of_unknown_execution_is_404(api: Any) -> None:
    assert (await api.client.get("/api/executions/77/events")).status_code == 404


async def test_project_keeps_documents_as_sent_and_refuses_ones_that_are_not_objects(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    sent = _events(execution_id, [1, 2, 3])
    sent[0]["context"] = {"nested": {"list": [1, 2.5, None, "ü ✓"]}, "empty": {}}
    sent[1]["context"] = None
    del sent[2]["context"], sent[2]["meta"]
    assert (await _project(api, sent)).json() == {"projected": 3, "duplicates": 0}
    listed = (await api.client.get(f"/api/executions/{execution_id}/events")).json()["events"]
    assert listed[0]["context"] == {"nested": {"list": [1, 2.5, None, "ü ✓"]}, "empty": {}}
    assert "context" not in listed[1] and "context" not in listed[2] and "meta" not in listed[2]
    for field, value in (("context", [1]), ("context", "text"), ("meta", 5)):
        bad = _events(execution_id, [9])
        bad[0][field] = value
        reply = await _project(api, bad)
        assert reply.status_code == 400 and f"events[0].{field} must be an object" in reply.json()["detail"]
    malformed = b'{"events": [{"execution_id": 1, "event_id": 1, "event_type": "x", "context": {"a": }}]}'
    reply = await api.client.post("/api/internal/events/project", content=malformed, headers=api.auth)
    assert reply.status_code == 400 and "malformed JSON" in reply.json()["detail"]
    assert len((await api.client.get(f"/api/executions/{execution_id}/events")).json()["events"]) == 3


async def test_project_reads_each_time_python_accepts_as_that_instant(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    sent = _events(execution_id, [1, 2, 3, 4])
    sent[0]["created_at"] = "2026-01-02T03:04:05"  # naive: UTC, the suite's only zone
    sent[1]["created_at"] = "2026-01-02T05:04:05+02:00"
    sent[2]["created_at"] = "2026-W01-5T03:04:05Z"  # an ISO week date, which Postgres does not read
    sent[3]["created_at"] = "not a time"  # the projection's own time
    assert (await _project(api, sent)).json() == {"projected": 4, "duplicates": 0}
    listed = (await api.client.get(f"/api/executions/{execution_id}/events")).json()["events"]
    assert {e["created_at"] for e in listed[:3]} == {"2026-01-02T03:04:05.000000Z"}
    assert listed[3]["created_at"] > "2026-01-03"  # the time it was projected at: later than any sent
