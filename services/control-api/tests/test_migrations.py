"""Migrations: recorded once, idempotent, and safe when several processes start together."""

from __future__ import annotations

import asyncio

import psycopg
from noetl_control_api.store import apply_migrations, load_migrations


async def test_apply_is_idempotent(database_url: str) -> None:
    versions = [m.version for m in load_migrations()]
    assert versions and versions == sorted(versions)
    assert await apply_migrations(database_url) == versions
    assert await apply_migrations(database_url) == []
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute("SELECT version FROM noetl.schema_migrations ORDER BY version")
        assert [r[0] for r in await cur.fetchall()] == versions


async def test_concurrent_starters_apply_each_version_once(database_url: str) -> None:
    results = await asyncio.gather(*(apply_migrations(database_url) for _ in range(5)))
    applied = sorted(v for result in results for v in result)
    assert applied == [m.version for m in load_migrations()]


async def test_tables_and_outbox_contract(database_url: str) -> None:
    await apply_migrations(database_url)
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cur = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'noetl' ORDER BY 1"
        )
        tables = {r[0] for r in await cur.fetchall()}
        assert {"catalog", "execution", "command", "outbox", "event", "worker", "schema_migrations"} <= tables
        cur = await conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'noetl.outbox'::regclass AND contype = 'u'"
        )
        assert [r[0] for r in await cur.fetchall()] == ["UNIQUE (execution_id, event_id)"]
        cur = await conn.execute(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = 'noetl' AND table_name = 'outbox' ORDER BY ordinal_position"
        )
        assert [r[0] for r in await cur.fetchall()] == [
            "outbox_id", "execution_id", "event_id", "subject", "payload", "status", "attempts",
            "available_at", "locked_at", "published_at", "last_error", "created_at", "updated_at",
        ]  # fmt: skip
