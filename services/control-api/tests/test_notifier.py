"""The outbox listener reconnects when its connection is killed and wakes waiters then."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from noetl_control_api.store import OutboxNotifier, apply_migrations
from noetl_control_api.store._notifier import LISTENER_APPLICATION_NAME, OUTBOX_CHANNEL


async def _listener_pids(conn: psycopg.AsyncConnection[Any]) -> list[int]:
    cur = await conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (LISTENER_APPLICATION_NAME,)
    )
    return [r[0] for r in await cur.fetchall()]


async def test_notify_wakes_and_reconnect_wakes(database_url: str) -> None:
    await apply_migrations(database_url)
    notifier = OutboxNotifier(database_url)
    await notifier.start()
    try:
        assert notifier.connected
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
            woken = notifier.current()
            await admin.execute("SELECT pg_notify(%s, '')", (OUTBOX_CHANNEL,))
            await asyncio.wait_for(woken.wait(), timeout=10)

            (first,) = await _listener_pids(admin)
            woken = notifier.current()
            await admin.execute("SELECT pg_terminate_backend(%s)", (first,))
            # nobody notifies: only the reconnect (which wakes everyone, rows may have been
            # inserted meanwhile) can set this event
            await asyncio.wait_for(woken.wait(), timeout=10)
            assert notifier.connected
            (second,) = await _listener_pids(admin)
            assert second != first
    finally:
        await notifier.stop()
    assert not notifier.connected
