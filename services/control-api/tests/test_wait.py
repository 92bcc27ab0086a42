"""``GET /api/executions/{id}?wait=``: a RUNNING execution's reply is held until it ends.

Every test finishes the execution only once the read is parked (registered and waiting),
and checks how each wait ended (``noetl_control_api_execution_waits_total``): a reply sent
because the wait ran out — a missed wake-up, re-read after :data:`HELD` seconds — counts
as a timeout, one sent because the end's NOTIFY woke it counts as woken.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from noetl_control_api import Settings
from noetl_control_api.store import EXECUTION_DONE_CHANNEL
from prometheus_client import REGISTRY

#: the wait of a held read: longer than any test takes, so only a wake-up answers it earlier
HELD = 30


def _waits(outcome: str) -> float:
    """How many held reads' waits ended so (``woken`` or ``timeout``) in this process so far."""
    value = REGISTRY.get_sample_value("noetl_control_api_execution_waits_total", {"outcome": outcome})
    return value or 0.0


class _Waits:
    """The waits that ended since it was made."""

    def __init__(self) -> None:
        self._start = {outcome: _waits(outcome) for outcome in ("woken", "timeout")}

    def __getitem__(self, outcome: str) -> float:
        return _waits(outcome) - self._start[outcome]


async def _get(client: httpx.AsyncClient, execution_id: int, wait: float | str = HELD) -> httpx.Response:
    return await client.get(f"/api/executions/{execution_id}", params={"wait": wait}, timeout=HELD + 30)


async def _parked(client: httpx.AsyncClient, count: int = 1) -> None:
    """Return once ``count`` reads of this app are parked waiting for their execution's end."""
    service = client.app.state.services.executions  # type: ignore[attr-defined]
    async with service.parked:
        await asyncio.wait_for(service.parked.wait_for(lambda: service.waiting >= count), HELD)


async def test_a_held_read_returns_the_terminal_view_when_the_execution_completes(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    waits = _Waits()
    held = asyncio.create_task(_get(api.client, execution_id))
    await _parked(api.client)

    for result in ({"n": 1}, {"n": 2}):  # steps that leave it RUNNING do not answer the read
        await api.run_command(execution_id, result)
        assert not held.done()
    await api.run_command(execution_id, {"n": 3})

    reply = await held
    assert reply.status_code == 200
    body = reply.json()
    assert body["status"] == "COMPLETED"
    assert body["ctx"]["total"] == 2 and body["results"]["end"] == {"n": 3}
    assert body == (await api.client.get(f"/api/executions/{execution_id}")).json()
    assert (waits["woken"], waits["timeout"]) == (1, 0)


async def test_a_cancel_answers_every_read_held_on_the_execution(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    waits = _Waits()
    held = [asyncio.create_task(_get(api.client, execution_id)) for _ in range(3)]
    await _parked(api.client, 3)

    cancel = await api.client.post(f"/api/executions/{execution_id}/cancel", json={"reason": "stop"})
    assert cancel.status_code == 200

    for reply in await asyncio.gather(*held):
        assert reply.status_code == 200 and reply.json()["status"] == "CANCELLED"
    assert (waits["woken"], waits["timeout"]) == (3, 0)


async def test_a_status_change_by_any_writer_wakes_the_read(api: Any, database_url: str) -> None:
    """The NOTIFY comes from a trigger, so any write that ends the execution, on any
    connection, answers the read."""
    await api.register()
    execution_id = await api.execute()
    waits = _Waits()
    held = asyncio.create_task(_get(api.client, execution_id))
    await _parked(api.client)

    async with await psycopg.AsyncConnection.connect(database_url) as other, other.transaction():
        await other.execute(
            "UPDATE noetl.execution SET status = 'FAILED', error = 'from elsewhere' WHERE execution_id = %s",
            (execution_id,),
        )

    body = (await held).json()
    assert body["status"] == "FAILED" and body["error"] == "from elsewhere"
    assert (waits["woken"], waits["timeout"]) == (1, 0)


async def test_a_read_held_on_one_replica_is_answered_by_an_end_on_another(
    api: Any, settings: Settings, serve_app: Any
) -> None:
    await api.register()
    execution_id = await api.execute()
    async with serve_app(settings, node_id=2) as replica:
        waits = _Waits()
        held = asyncio.create_task(_get(replica, execution_id))
        await _parked(replica)

        await api.client.post(f"/api/executions/{execution_id}/cancel")

        assert (await held).json()["status"] == "CANCELLED"
        assert (waits["woken"], waits["timeout"]) == (1, 0)


async def test_an_end_wakes_only_the_reads_of_that_execution(api: Any) -> None:
    await api.register()
    ending, other = await api.execute(), await api.execute()
    waits = _Waits()
    held_other = asyncio.create_task(_get(api.client, other))
    held_ending = asyncio.create_task(_get(api.client, ending))
    await _parked(api.client, 2)

    await api.client.post(f"/api/executions/{ending}/cancel")
    assert (await held_ending).json()["status"] == "CANCELLED"
    await api.client.post(f"/api/executions/{other}/cancel", json={"reason": "its own end"})

    body = (await held_other).json()
    assert body["status"] == "CANCELLED" and "its own end" in body["error"]
    # one wake-up each: the first end did not wake the other execution's read
    assert (waits["woken"], waits["timeout"]) == (2, 0)


async def test_a_held_read_holds_no_pool_connection(api: Any, settings: Settings, serve_app: Any) -> None:
    """With a pool of one connection, two held reads and the cancel that ends them all fit."""
    await api.register()
    execution_id = await api.execute()
    async with serve_app(msgspec.structs.replace(settings, db_pool_size=1), node_id=3) as small:
        waits = _Waits()
        held = [asyncio.create_task(_get(small, execution_id)) for _ in range(2)]
        await _parked(small, 2)

        cancel = await small.post(f"/api/executions/{execution_id}/cancel")
        assert cancel.status_code == 200

        assert [r.json()["status"] for r in await asyncio.gather(*held)] == ["CANCELLED", "CANCELLED"]
        assert (waits["woken"], waits["timeout"]) == (2, 0)


async def test_nothing_happens_the_running_view_comes_back_after_the_wait(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    waits = _Waits()
    started = time.monotonic()

    reply = await _get(api.client, execution_id, wait=0.2)

    assert reply.status_code == 200 and reply.json()["status"] == "RUNNING"
    assert (waits["woken"], waits["timeout"]) == (0, 1)
    assert time.monotonic() - started >= 0.2  # held, not answered at once


async def test_a_finished_execution_is_answered_at_once(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    await api.client.post(f"/api/executions/{execution_id}/cancel")
    waits = _Waits()

    reply = await _get(api.client, execution_id)

    assert reply.json()["status"] == "CANCELLED"
    assert (waits["woken"], waits["timeout"]) == (0, 0)  # never parked


@pytest.mark.parametrize("wait", ["0", "-1", "60.5", "1e9", "nan", "inf", "soon"])
async def test_a_wait_out_of_bounds_is_a_400_in_the_error_shape(api: Any, wait: str) -> None:
    await api.register()
    execution_id = await api.execute()

    reply = await _get(api.client, execution_id, wait=wait)

    assert reply.status_code == 400, reply.text
    body = reply.json()
    assert body["status_code"] == 400 and body["error"] == "validation_error"
    assert "wait" in body["detail"] or "wait" in str(body.get("extra"))


async def test_an_unknown_execution_is_a_404_at_once(api: Any) -> None:
    reply = await _get(api.client, 123456789)
    assert reply.status_code == 404 and reply.json()["error"] == "not_found"


async def test_shutdown_releases_held_reads(api: Any) -> None:
    await api.register()
    execution_id = await api.execute()
    waits = _Waits()
    held = asyncio.create_task(_get(api.client, execution_id))
    await _parked(api.client)

    api.client.app.state.services.executions.close()

    reply = await held
    assert reply.status_code == 200 and reply.json()["status"] == "RUNNING"
    assert (waits["woken"], waits["timeout"]) == (1, 0)


async def test_the_trigger_notifies_each_end_once_with_the_execution_id(api: Any, database_url: str) -> None:
    await api.register()
    running, ending = await api.execute(), await api.execute()
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {EXECUTION_DONE_CHANNEL}")
        await api.db.execute(  # RUNNING → RUNNING (a step's outcome): no notification
            "UPDATE noetl.execution SET status = 'RUNNING', updated_at = now() WHERE execution_id = %s",
            (running,),
        )
        await api.db.execute(
            "UPDATE noetl.execution SET status = 'COMPLETED' WHERE execution_id = %s", (ending,)
        )
        await api.db.execute(  # already terminal, same status again: no notification
            "UPDATE noetl.execution SET status = 'COMPLETED' WHERE execution_id = %s", (ending,)
        )
        await api.db.execute(
            "UPDATE noetl.execution SET status = 'CANCELLED' WHERE execution_id = %s", (running,)
        )

        payloads = []
        async for notify in listener.notifies(stop_after=2, timeout=HELD):
            payloads.append(notify.payload)
    assert payloads == [str(ending), str(running)]
