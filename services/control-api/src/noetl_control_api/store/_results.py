"""``noetl.result_store``: step results too large for an event (architecture.md §5.6)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection


@dataclass
class StoredResult:
    """One stored result."""

    key: str
    execution_id: int
    media_type: str
    size: int
    data: bytes


async def put(conn: AsyncConnection[Any], key: str, execution_id: int, media_type: str, data: bytes) -> None:
    await conn.execute(
        "INSERT INTO noetl.result_store (key, execution_id, media_type, size, data)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING",
        (key, execution_id, media_type, len(data), data),
    )


async def get(conn: AsyncConnection[Any], key: str) -> StoredResult | None:
    cur = await conn.execute(
        "SELECT key, execution_id, media_type, size, data FROM noetl.result_store WHERE key = %s", (key,)
    )
    row = await cur.fetchone()
    return StoredResult(row[0], row[1], row[2], row[3], bytes(row[4])) if row else None


async def copy(conn: AsyncConnection[Any], keys: dict[str, str], execution_id: int) -> None:
    """Copy stored results (old key → new key) into ``execution_id``: a rerun keeps the results
    it reuses under its own id, so purging the earlier execution leaves its log resolvable."""
    if not keys:
        return
    await conn.execute(
        "INSERT INTO noetl.result_store (key, execution_id, media_type, size, data)"
        " SELECT n.new_key, %s, r.media_type, r.size, r.data"
        " FROM unnest(%s::text[], %s::text[]) AS n(old_key, new_key)"
        " JOIN noetl.result_store r ON r.key = n.old_key ON CONFLICT (key) DO NOTHING",
        (execution_id, list(keys), list(keys.values())),
    )
