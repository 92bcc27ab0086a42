"""Versioned SQL migrations, applied once each under a Postgres advisory lock.

Files are ``migrations/NNNN_name.sql``; each runs in its own transaction together with
its row in ``noetl.schema_migrations``, so a crash never leaves a half-applied version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg

# any constant works; it only has to be the same in every control-api process
_LOCK_KEY = 0x4E4F45544C_01  # "NOETL" + 1
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str


def load_migrations() -> list[Migration]:
    """The package's migrations, ordered by version."""
    found: list[Migration] = []
    for entry in resources.files("noetl_control_api").joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def apply_migrations(database_url: str) -> list[int]:
    """Apply every pending migration; returns the versions applied by this call."""
    applied: list[int] = []
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        # session lock: concurrent starters wait here, then see the versions already applied
        await conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            await conn.execute("CREATE SCHEMA IF NOT EXISTS noetl")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS noetl.schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cur = await conn.execute("SELECT version FROM noetl.schema_migrations")
            done = {row[0] for row in await cur.fetchall()}
            for migration in load_migrations():
                if migration.version in done:
                    continue
                async with conn.transaction():
                    await conn.execute(migration.sql.encode())
                    await conn.execute(
                        "INSERT INTO noetl.schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
                applied.append(migration.version)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied
