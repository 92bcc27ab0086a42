"""The listeners reconnect when their connection is killed and wake waiters then; a keyed
listener wakes only the waiters of the key notified."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
from noetl_control_api.store import (
    EVENT_CHANNEL,
    EXECUTION_DONE_CHANNEL,
    WAKE_ALL,
    KeyedNotifier,
    OutboxNotifier,
    apply_migrations,
)
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


async def test_keyed_notifier_wakes_only_the_key_notified(database_url: str) -> None:
    notifier = KeyedNotifier(database_url)
    await notifier.start()
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
            with notifier.watch(1) as one, notifier.watch(1) as one_again, notifier.watch(2) as two:
                assert one is one_again  # waiters of a key share its event
                with notifier.watch(3) as sentinel:
                    for payload in ("1", "not a key", "3"):
                        await admin.execute("SELECT pg_notify(%s, %s)", (EXECUTION_DONE_CHANNEL, payload))
                    # notifications arrive in order: once 3 is handled, 1 and the junk one were too
                    await asyncio.wait_for(sentinel.wait(), timeout=10)
                assert one.is_set() and not two.is_set()
                with notifier.watch(1) as fresh:
                    assert not fresh.is_set()  # the next wait on key 1 needs the next notification
                assert notifier.keys == 1  # 2 only: key 1 was woken, and its fresh waiter left

                (pid,) = await _listener_pids(admin)
                await admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                # a reconnect may have missed notifications of any key: every key is woken
                await asyncio.wait_for(two.wait(), timeout=10)
            assert notifier.keys == 0
    finally:
        await notifier.stop()


async def test_keyed_notifier_takes_several_keys_and_the_wake_all_marker(database_url: str) -> None:
    notifier = KeyedNotifier(database_url, EVENT_CHANNEL)
    await notifier.start()
    try:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as admin:
            with notifier.watch(1) as one, notifier.watch(2) as two, notifier.watch(3) as three:
                await admin.execute("SELECT pg_notify(%s, %s)", (EVENT_CHANNEL, "1,x,3"))
                await asyncio.wait_for(three.wait(), timeout=10)
                assert one.is_set() and not two.is_set()  # a bad part is skipped, not the rest
                await admin.execute("SELECT pg_notify(%s, %s)", (EVENT_CHANNEL, WAKE_ALL))
                await asyncio.wait_for(two.wait(), timeout=10)
            assert notifier.keys == 0
    finally:
        await notifier.stop()
