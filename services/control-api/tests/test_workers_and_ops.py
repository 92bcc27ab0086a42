"""Worker registry, health, readiness, metrics and the OpenAPI document."""

from __future__ import annotations

from typing import Any


async def _worker(api: Any, worker_id: str) -> tuple[Any, ...] | None:
    cur = await api.db.execute(
        "SELECT pool, capacity, status, in_flight, hostname FROM noetl.worker WHERE worker_id = %s",
        (worker_id,),
    )
    return await cur.fetchone()


async def test_worker_register_heartbeat_deregister(api: Any, auth: Any) -> None:
    client = api.client
    reply = await client.post(
        "/api/worker/pool/register",
        json={"worker_id": "w1", "pool": "shared", "capacity": 4, "hostname": "h"},
    )
    assert reply.status_code == 200
    assert reply.json()["worker_id"] == "w1" and isinstance(reply.json()["node_id"], int)
    assert await _worker(api, "w1") == ("shared", 4, "ACTIVE", 0, "h")
    assert (
        await client.post("/api/worker/pool/heartbeat", json={"worker_id": "w1", "in_flight": 3})
    ).status_code == 204
    assert (await _worker(api, "w1"))[3] == 3  # type: ignore[index]
    assert (await client.post("/api/worker/pool/deregister", json={"worker_id": "w1"})).status_code == 204
    assert (await _worker(api, "w1"))[2] == "DEREGISTERED"  # type: ignore[index]
    assert (
        await client.request("DELETE", "/api/worker/pool/deregister", params={"worker_id": "w1"})
    ).status_code == 204

    # a worker unknown here (a restored database) is re-added in the pool its token serves
    unknown = await client.post("/api/worker/pool/heartbeat", json={"worker_id": "ghost"})
    assert unknown.status_code == 204 and (await _worker(api, "ghost"))[0] == "shared"  # type: ignore[index]
    other_pool = await client.post("/api/worker/pool/heartbeat", json={"worker_id": "ghost2", "pool": "system"})
    assert other_pool.status_code == 403 and await _worker(api, "ghost2") is None
    readd = await client.post(
        "/api/worker/pool/heartbeat", json={"worker_id": "ghost2", "pool": "system"}, headers=auth.SYSTEM_WORKER
    )
    assert readd.status_code == 204 and (await _worker(api, "ghost2"))[0] == "system"  # type: ignore[index]
    # an id registered for one pool cannot be taken over by another pool's token
    taken = await client.post(
        "/api/worker/pool/register",
        json={"worker_id": "w1", "pool": "system", "capacity": 1},
        headers=auth.SYSTEM_WORKER,
    )
    assert taken.status_code == 409 and (await _worker(api, "w1"))[0] == "shared"  # type: ignore[index]
    bad_pool = await client.post("/api/worker/pool/register", json={"worker_id": "w2", "pool": "gpu"})
    assert bad_pool.status_code == 400 and bad_pool.json()["error"] == "validation_error"


async def test_health_ready_metrics_openapi(api: Any) -> None:
    client = api.client
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    assert (await client.get("/api/health")).json() == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    await api.register()
    metrics = (await client.get("/metrics")).text
    assert "noetl_control_api_request_duration_seconds_bucket" in metrics
    assert 'route="/api/catalog/register"' in metrics
    assert "noetl_control_api_outbox_pending" in metrics
    schema = (await client.get("/schema/openapi.json")).json()
    assert "/api/commands/{event_id}/claim" in schema["paths"]
    assert "/api/internal/outbox/claim" in schema["paths"]
