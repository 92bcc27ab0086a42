"""Snowflake node ids leased from ``noetl.node_lease``: never shared by two live holders."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
from noetl_common import Snowflake
from noetl_control_api import create_app

SPLIT = 12  # sequence bits below the node bits


def _node_of(snowflake: int) -> int:
    return (snowflake >> SPLIT) & 0x3FF


async def _register(client: httpx.AsyncClient, worker_id: str) -> Any:
    reply = await client.post(
        "/api/worker/pool/register", json={"worker_id": worker_id, "pool": "shared", "capacity": 1}
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


async def _leases(db: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    cur = await db.execute("SELECT holder, node_id FROM noetl.node_lease")
    return {holder: node for holder, node in await cur.fetchall()}


async def test_workers_get_distinct_node_ids_kept_by_heartbeats_and_released(api: Any) -> None:
    replies = await asyncio.gather(*(_register(api.client, f"w{i}") for i in range(40)))
    nodes = [r["node_id"] for r in replies]
    assert len(set(nodes)) == 40 and all(0 <= n <= 1023 for n in nodes)
    assert replies[0]["node_lease_seconds"] == 300.0
    # registering again (a restarted worker with the same id) keeps its node id
    assert (await _register(api.client, "w0"))["node_id"] == nodes[0]
    # a heartbeat renews the lease
    await api.db.execute("UPDATE noetl.node_lease SET expires_at = now() + interval '1 second'")
    beat = await api.client.post("/api/worker/pool/heartbeat", json={"worker_id": "w1", "in_flight": 0})
    assert beat.status_code == 204
    cur = await api.db.execute(
        "SELECT expires_at > now() + interval '200 seconds' FROM noetl.node_lease WHERE holder = 'worker:w1'"
    )
    assert (await cur.fetchone()) == (True,)
    # deregistering gives the id back; an expired lease is taken over by the next newcomer
    await api.client.post("/api/worker/pool/deregister", json={"worker_id": "w2"})
    assert "worker:w2" not in await _leases(api.db)
    await api.db.execute(
        "UPDATE noetl.node_lease SET expires_at = now() - interval '1 second' WHERE holder = 'worker:w3'"
    )
    newcomer = await _register(api.client, "late")
    assert newcomer["node_id"] in (nodes[2], nodes[3])
    assert len(set((await _leases(api.db)).values())) == len(await _leases(api.db))


async def test_all_node_ids_held_gives_none(api: Any) -> None:
    await api.db.execute(
        "INSERT INTO noetl.node_lease (node_id, holder, expires_at)"
        " SELECT n, 'other:' || n, now() + interval '1 hour' FROM generate_series(0, 1023) n"
    )
    assert (await _register(api.client, "w-full"))["node_id"] is None


async def test_the_api_leases_its_own_node_and_mints_ids_with_it(
    database_url: str, serve_app: Any, make_settings: Any
) -> None:
    settings = make_settings(database_url, snowflake_node_lease=True)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as db:
        async with serve_app(settings):
            pass  # applies the migrations (this app has explicit ids: it leases nothing)
        await db.execute(
            "INSERT INTO noetl.node_lease (node_id, holder, expires_at)"
            " SELECT n, 'other:' || n, now() + interval '1 hour' FROM generate_series(0, 6) n"
        )
        # built as production does: no explicit ids, so the node id is leased
        app = create_app(settings)
        async with app.state.lifespan():
            leases = await _leases(db)
            (holder,) = [h for h in leases if h.startswith("control-api:")]
            assert leases[holder] == 7  # the lowest free id
            assert app.state.services.ingest._recorder.ids.node_id == 7
            assert _node_of(app.state.services.ingest._recorder.ids.next_id()) == 7
        assert not [h for h in await _leases(db) if h.startswith("control-api:")]


async def test_a_lapsed_node_lease_goes_to_a_newcomer_while_its_first_holder_mints_on(api: Any) -> None:
    """Why event ids are unique per execution only (docs/architecture.md#3-identifiers): a
    worker whose heartbeats stopped reaching the API for NOETL_NODE_LEASE_SECONDS loses its
    node id to the next worker that registers, and nothing in a later heartbeat's reply tells
    it so; until it registers again, both mint ids with one node id, and in one millisecond
    the same id, which the outbox (unique per execution) accepts for two executions."""
    first = (await _register(api.client, "w-first"))["node_id"]
    await api.db.execute(
        "UPDATE noetl.node_lease SET expires_at = now() - interval '1 second' WHERE holder = 'worker:w-first'"
    )
    assert (await _register(api.client, "w-newcomer"))["node_id"] == first
    beat = await api.client.post("/api/worker/pool/heartbeat", json={"worker_id": "w-first", "in_flight": 0})
    assert beat.status_code == 204 and not beat.content  # no word of the node id it lost
    assert (await _leases(api.db))["worker:w-newcomer"] == first and "worker:w-first" not in await _leases(api.db)

    now = 1_800_000_000_000  # one millisecond, as both processes see it
    mine, theirs = Snowflake(first, clock_ms=lambda: now), Snowflake(first, clock_ms=lambda: now)
    assert mine.next_id() == theirs.next_id()
