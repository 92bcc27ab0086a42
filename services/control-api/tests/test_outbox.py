"""Internal outbox API: claim order, SKIP LOCKED, reclaim, mark-published/failed, long-poll."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import psycopg
from noetl_common import outbox_delay_seconds


async def _claim(api: Any, limit: int = 100, wait_ms: int = 0) -> dict[str, Any]:
    reply = await api.client.post(
        "/api/internal/outbox/claim", json={"limit": limit, "wait_ms": wait_ms}, headers=api.auth, timeout=30
    )
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    assert body["claimed"] == len(body["rows"])
    return body


async def _pending(api: Any) -> int:
    reply = await api.client.get("/api/internal/outbox/pending-count", headers=api.auth)
    return int(reply.json()["pending"])


async def test_claim_in_order_with_limit_then_mark_published(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    total = len(await api.outbox(execution_id))
    assert await _pending(api) == total

    first = await _claim(api, limit=2)
    rest = await _claim(api, limit=100)
    ids = [r["outbox_id"] for r in first["rows"] + rest["rows"]]
    assert ids == sorted(ids) and len(ids) == total
    assert (await _claim(api))["rows"] == []  # IN_FLIGHT rows under a live lock are not handed out twice
    row = first["rows"][0]
    assert set(row) == {"outbox_id", "event_id", "execution_id", "subject", "payload", "attempts"}
    assert row["execution_id"] == execution_id

    marked = await api.client.post(
        "/api/internal/outbox/mark-published", json={"outbox_ids": ids}, headers=api.auth
    )
    assert marked.json() == {"marked": total}
    again = await api.client.post(
        "/api/internal/outbox/mark-published", json={"outbox_ids": ids}, headers=api.auth
    )
    assert again.status_code == 200 and again.json() == {"marked": 0}
    assert await _pending(api) == 0
    assert {r["status"] for r in await api.outbox(execution_id)} == {"PUBLISHED"}


async def test_claim_skips_rows_locked_by_another_publisher(api: Any, database_url: str) -> None:
    await api.register()
    await api.execute()
    rows = await api.outbox()
    async with await psycopg.AsyncConnection.connect(database_url) as other, other.transaction():
        await other.execute(
            "SELECT 1 FROM noetl.outbox WHERE outbox_id = ANY(%s) FOR UPDATE", ([rows[0]["outbox_id"]],)
        )
        claimed = await _claim(api)
        assert [r["outbox_id"] for r in claimed["rows"]] == [r["outbox_id"] for r in rows[1:]]
    after = await _claim(api)
    assert [r["outbox_id"] for r in after["rows"]] == [rows[0]["outbox_id"]]


async def test_in_flight_rows_past_the_lease_are_reclaimed(api: Any) -> None:
    await api.register()
    await api.execute()
    claimed = await _claim(api)
    assert claimed["claimed"] > 0
    assert (await _claim(api))["claimed"] == 0
    await api.db.execute("UPDATE noetl.outbox SET locked_at = now() - interval '1 hour'")
    assert [r["outbox_id"] for r in (await _claim(api))["rows"]] == [r["outbox_id"] for r in claimed["rows"]]


async def test_mark_failed_delays_the_row(api: Any) -> None:
    await api.register()
    await api.execute()
    row = (await _claim(api, limit=1))["rows"][0]
    reply = await api.client.post(
        "/api/internal/outbox/mark-failed",
        json={"outbox_id": row["outbox_id"], "error": "nats down", "attempts": 3, "max_delay_seconds": 60},
        headers=api.auth,
    )
    assert reply.status_code == 200
    assert reply.json() == {"marked": 1, "available_at_in": outbox_delay_seconds(3, 60) == 4.0 and 4.0}
    cur = await api.db.execute(
        "SELECT status, attempts, last_error, available_at > now() + interval '3 seconds'"
        " FROM noetl.outbox WHERE outbox_id = %s",
        (row["outbox_id"],),
    )
    assert await cur.fetchone() == ("PENDING", 3, "nats down", True)
    remaining = await _claim(api)
    assert row["outbox_id"] not in [r["outbox_id"] for r in remaining["rows"]]
    await api.db.execute(
        "UPDATE noetl.outbox SET available_at = now() WHERE outbox_id = %s", (row["outbox_id"],)
    )
    retried = (await _claim(api))["rows"]
    assert [r["outbox_id"] for r in retried] == [row["outbox_id"]] and retried[0]["attempts"] == 3
    capped = await api.client.post(
        "/api/internal/outbox/mark-failed",
        json={"outbox_id": row["outbox_id"], "error": "x", "attempts": 30, "max_delay_seconds": 10},
        headers=api.auth,
    )
    assert capped.json()["available_at_in"] == 10.0
    unknown = await api.client.post(
        "/api/internal/outbox/mark-failed",
        json={"outbox_id": 987654, "error": "x", "attempts": 1},
        headers=api.auth,
    )
    assert unknown.json()["marked"] == 0


async def _parked(api: Any) -> None:
    """Return once a claim is parked waiting for a wake-up."""
    service = api.client.app.state.services.outbox
    async with service.parked:
        await asyncio.wait_for(service.parked.wait_for(lambda: service.waiting > 0), timeout=10)


async def test_long_poll_returns_rows_inserted_after_the_call_started(api: Any) -> None:
    await api.register()
    assert (await _claim(api))["rows"] == []
    started = time.monotonic()
    waiter = asyncio.create_task(_claim(api, wait_ms=20_000))
    await _parked(api)  # the claim found nothing and is waiting
    execution_id = await api.execute()
    body = await asyncio.wait_for(waiter, timeout=10)
    assert body["claimed"] > 0
    assert {r["execution_id"] for r in body["rows"]} == {execution_id}
    assert time.monotonic() - started < 10


async def test_a_long_poll_after_a_drained_claim_waits_first_and_still_gets_new_rows(api: Any) -> None:
    """A claim that took every row leaves nothing to find until an insert notifies: the next
    long-poll waits without querying the empty table, and the insert still wakes it."""
    await api.register()
    service = api.client.app.state.services.outbox
    assert (await _claim(api))["rows"] == []  # drained: nothing inserted since
    skipped = service.skipped_queries
    waiter = asyncio.create_task(_claim(api, wait_ms=20_000))
    await _parked(api)
    assert service.skipped_queries == skipped + 1
    execution_id = await api.execute()
    body = await asyncio.wait_for(waiter, timeout=10)
    assert body["claimed"] > 0
    assert {r["execution_id"] for r in body["rows"]} == {execution_id}


async def test_a_row_marked_failed_is_offered_by_the_next_long_poll_at_once(api: Any) -> None:
    """mark-failed makes a row claimable again without a notification: the next long-poll
    looks before it waits, and gets it."""
    await api.register()
    await api.execute()
    service = api.client.app.state.services.outbox
    rows = (await _claim(api, wait_ms=1_000))["rows"]  # every row: drained
    reply = await api.client.post(
        "/api/internal/outbox/mark-failed",
        json={"outbox_id": rows[0]["outbox_id"], "error": "nats down", "attempts": 0, "max_delay_seconds": 0},
        headers=api.auth,
    )
    assert reply.json()["marked"] == 1
    skipped = service.skipped_queries
    body = await asyncio.wait_for(_claim(api, wait_ms=20_000), timeout=10)
    assert [r["outbox_id"] for r in body["rows"]] == [rows[0]["outbox_id"]]
    assert service.skipped_queries == skipped


async def test_long_poll_wakes_on_notify_from_another_connection(api: Any, database_url: str) -> None:
    waiter = asyncio.create_task(_claim(api, wait_ms=20_000))
    await _parked(api)
    async with await psycopg.AsyncConnection.connect(database_url) as other, other.transaction():
        await other.execute(
            "INSERT INTO noetl.outbox (execution_id, event_id, subject, payload) VALUES (7, 8, 's', '{}')"
        )
        await other.execute("SELECT pg_notify('noetl_outbox', '')")
    body = await asyncio.wait_for(waiter, timeout=10)
    assert [(r["execution_id"], r["event_id"]) for r in body["rows"]] == [(7, 8)]


async def test_long_poll_times_out_empty(api: Any) -> None:
    started = time.monotonic()
    body = await _claim(api, wait_ms=150)
    assert body == {"rows": [], "claimed": 0, "marked": 0}
    assert time.monotonic() - started >= 0.15


async def test_claim_request_bounds(api: Any) -> None:
    too_many = list(range(1, 10_002))
    for body in (
        {"limit": 0},
        {"limit": 10**9},
        {"wait_ms": -1},
        {"wait_ms": 10**9},
        {"limit": "many"},
        {"published": [0]},
        {"published": ["x"]},
        {"published": too_many},
    ):
        reply = await api.client.post("/api/internal/outbox/claim", json=body, headers=api.auth)
        assert reply.status_code == 400, body
        assert reply.json()["error"] == "validation_error"


async def test_shutdown_releases_parked_long_polls(api: Any) -> None:
    waiter = asyncio.create_task(_claim(api, wait_ms=60_000))
    await _parked(api)
    api.client.app.state.services.outbox.close()
    assert await asyncio.wait_for(waiter, timeout=10) == {"rows": [], "claimed": 0, "marked": 0}


async def test_purge_deletes_only_old_published_rows(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    rows = (await _claim(api))["rows"]
    published = [r["outbox_id"] for r in rows[:2]]
    await api.client.post(
        "/api/internal/outbox/mark-published", json={"outbox_ids": published}, headers=api.auth
    )
    await api.db.execute(
        "UPDATE noetl.outbox SET published_at = now() - interval '2 days' WHERE outbox_id = %s",
        (published[0],),
    )
    reply = await api.client.post("/api/internal/cleanup/purge", json={}, headers=api.auth)
    assert reply.status_code == 200 and reply.json()["outbox_deleted"] == 1
    remaining = [r["outbox_id"] for r in await api.outbox(execution_id)]
    assert published[0] not in remaining and published[1] in remaining and len(remaining) == len(rows) - 1
    sweep = await api.client.post(
        "/api/internal/cleanup/sweep", json={"outbox_published_older_than_seconds": 0}, headers=api.auth
    )
    assert sweep.json()["outbox_deleted"] == 1
    assert (
        await api.client.post("/api/internal/cleanup/purge", json={"limit": 0}, headers=api.auth)
    ).status_code == 400
    anonymous = await api.client.post("/api/internal/cleanup/purge", json={}, headers={"authorization": ""})
    assert anonymous.status_code == 401
